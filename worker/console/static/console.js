// attune console: two small behaviours on top of server-rendered pages.
// Everything works without it except live updates.
(() => {
  "use strict";
  const main = document.getElementById("main");

  // Pages marked data-refresh re-read their main part while something is
  // queued or running; they stop once the server stops marking them, and
  // wait while the user is typing in a field.
  const every = main && Number(main.dataset.refresh);
  if (every) {
    const busy = () => {
      const a = document.activeElement;
      return a && main.contains(a) && a.matches("input, select, textarea");
    };
    const tick = async () => {
      if (!document.hidden && !busy()) {
        try {
          // A page with parts marked data-live (an execution's facts
          // beside its streamed output) swaps only those, and says so:
          // the answer then leaves the output out.
          const live = [...main.querySelectorAll("[data-live]")];
          const headers = live.length ? { "X-Attune-Refresh": "facts" } : {};
          const resp = await fetch(location.href, { credentials: "same-origin", headers });
          if (resp.ok && !resp.redirected) {
            const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
            const next = doc.getElementById("main");
            if (next) {
              if (live.length) {
                for (const el of live) {
                  const fresh = doc.getElementById(el.id);
                  if (fresh) el.replaceWith(document.importNode(fresh, true));
                }
              } else {
                main.innerHTML = next.innerHTML;
              }
              if (!next.dataset.refresh) return;
            }
          }
        } catch (_) { /* the next tick tries again */ }
      }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }

  // An execution that has not finished follows its stdout and stderr
  // through the API's Server-Sent Events, then reloads for the final state.
  const section = document.querySelector("[data-stream]");
  if (section && window.EventSource) {
    const out = { stdout: document.getElementById("stdout"), stderr: document.getElementById("stderr") };
    const follow = document.getElementById("follow");
    const es = new EventSource(section.dataset.stream);
    es.onopen = () => {
      // The stream starts from the first byte: replace what the page had.
      out.stdout.textContent = "";
      out.stderr.textContent = "";
      follow.hidden = false;
    };
    for (const name of ["stdout", "stderr"]) {
      es.addEventListener(name, (ev) => {
        const pre = out[name];
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent += JSON.parse(ev.data);
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      });
    }
    // The stored text was rewritten (the truncation notice replaced its
    // last bytes): the stream's whole text follows again.
    es.addEventListener("reset", (ev) => {
      out[JSON.parse(ev.data)].textContent = "";
    });
    es.addEventListener("end", () => {
      es.close();
      follow.textContent = "Finished; loading the final state…";
      location.reload();
    });
  }
})();
