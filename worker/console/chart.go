package console

import (
	"fmt"
	"html/template"
	"strings"
)

// chart draws the last hour as inline SVG: one bar per minute for the
// executions enqueued, the failures over it in the failure colour. The
// numbers are in each bar's title and in the figure's text, so the chart
// is never the only place they are.
func chart(hour []minute) template.HTML {
	const w, h, pad = 600, 120, 18
	peak := 1
	for _, m := range hour {
		peak = max(peak, m.Created, m.Failures)
	}
	barW := float64(w) / float64(max(len(hour), 1))
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="chart-title" preserveAspectRatio="none">`, w, h+pad)
	b.WriteString(`<title id="chart-title">Executions enqueued and failures per minute over the last hour</title>`)
	for _, frac := range []float64{0, 0.5, 1} {
		y := float64(h) - frac*float64(h)
		fmt.Fprintf(&b, `<line class="grid" x1="0" x2="%d" y1="%.1f" y2="%.1f"/>`, w, y, y)
	}
	fmt.Fprintf(&b, `<text class="axis" x="2" y="11">%d/min</text>`, peak)
	for i, m := range hour {
		x := float64(i) * barW
		ch := float64(m.Created) / float64(peak) * h
		fh := float64(m.Failures) / float64(peak) * h
		fmt.Fprintf(&b, `<g><title>%s UTC: %d enqueued, %d failed</title>`, m.At.UTC().Format("15:04"), m.Created, m.Failures)
		fmt.Fprintf(&b, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`, x+1, float64(h)-ch, barW-2, ch)
		if m.Failures > 0 {
			fmt.Fprintf(&b, `<rect class="bar fail" x="%.1f" y="%.1f" width="%.1f" height="%.1f"/>`, x+barW/4, float64(h)-fh, barW/2, fh)
		}
		// An invisible full-height target so every minute has a tooltip.
		fmt.Fprintf(&b, `<rect class="hit" x="%.1f" y="0" width="%.1f" height="%d"/></g>`, x, barW, h)
	}
	if len(hour) > 0 {
		fmt.Fprintf(&b, `<text class="axis" x="0" y="%d">%s</text>`, h+pad-4, hour[0].At.UTC().Format("15:04"))
		fmt.Fprintf(&b, `<text class="axis" x="%d" y="%d" text-anchor="end">%s UTC</text>`, w, h+pad-4, hour[len(hour)-1].At.UTC().Format("15:04"))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // only numbers and fixed text go in
}
