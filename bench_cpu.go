package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// cpuSplit is CPU time per run, in milliseconds.
type cpuSplit struct {
	Self     float64 `json:"self"`
	Children float64 `json:"children"`
	Other    float64 `json:"other"`
}

func (c cpuSplit) total() float64 { return c.Self + c.Children + c.Other }

// cpuSample is a point-in-time reading of the CPU counters.
type cpuSample struct {
	self, children, machine time.Duration
}

func sampleCPU() cpuSample {
	var self, kids syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	return cpuSample{
		self:     time.Duration(self.Utime.Nano() + self.Stime.Nano()),
		children: time.Duration(kids.Utime.Nano() + kids.Stime.Nano()),
		machine:  machineBusy(),
	}
}

// machineBusy is the machine's busy CPU time from /proc/stat: user, nice,
// system, irq and softirq. Not idle or iowait; not steal, the time the
// hypervisor gave other machines, which moves with their load and not
// ours; not guest and guest_nice, which user and nice already count.
func machineBusy() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7} {
		if i < len(f) {
			n, _ := strconv.ParseInt(f[i], 10, 64)
			busy += n
		}
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ
}

func (a cpuSample) per(b cpuSample, n int) cpuSplit {
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / float64(n) }
	self, kids := b.self-a.self, b.children-a.children
	return cpuSplit{Self: ms(self), Children: ms(kids), Other: max(ms(b.machine-a.machine-self-kids), 0)}
}

func (a cpuSample) add(b cpuSample) cpuSample {
	return cpuSample{a.self + b.self, a.children + b.children, a.machine + b.machine}
}

func (a cpuSample) sub(b cpuSample) cpuSample {
	return cpuSample{a.self - b.self, a.children - b.children, a.machine - b.machine}
}
