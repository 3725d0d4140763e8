package worker

import (
	"context"
	"sync"
	"time"
)

// batches is the group commit of the completer and the claimer: Work calls
// queue requests, and a loop takes the first waiting, then whatever else is
// queued (up to max), and serves them all in one round trip. Under load a
// batch grows by itself (requests queue while a round trip is in flight);
// idle, a batch is one request and adds no wait.
type batches[T any] struct {
	reqs    chan T
	stopped chan struct{} // closed when run returns
}

func newBatches[T any](max int) *batches[T] {
	return &batches[T]{reqs: make(chan T, max), stopped: make(chan struct{})}
}

// run serves batches of at most max requests with loops goroutines until
// ctx is done. A batch taken is served to the end: serve answers every
// request of it before its loop looks at ctx again.
//
// With stagger, one loop serves at a time, so that what arrives during its
// round trips queues for the next batch instead of starting a round trip
// of its own; the next loop may start once a batch has taken stagger (a
// lock wait, a slow flush, an outage), so that one slow batch does not
// hold back the rest.
func (b *batches[T]) run(ctx context.Context, loops, max int, stagger time.Duration, serve func(ctx context.Context, batch []T)) {
	defer close(b.stopped)
	turn := make(chan struct{}, 1) // held by the loop serving, when staggered
	turn <- struct{}{}
	var wg sync.WaitGroup
	for range loops {
		wg.Go(func() {
			for {
				if stagger > 0 {
					select {
					case <-turn:
					case <-ctx.Done():
						return
					}
				}
				var first T
				select {
				case first = <-b.reqs:
				case <-ctx.Done():
					if stagger > 0 {
						turn <- struct{}{}
					}
					return
				}
				batch := []T{first}
			fill:
				for len(batch) < max {
					select {
					case r := <-b.reqs:
						batch = append(batch, r)
					default:
						break fill
					}
				}
				if stagger == 0 {
					serve(ctx, batch)
					continue
				}
				var once sync.Once
				pass := func() { once.Do(func() { turn <- struct{}{} }) }
				t := time.AfterFunc(stagger, pass)
				serve(ctx, batch)
				t.Stop()
				pass()
			}
		})
	}
	wg.Wait()
}

// call queues req and waits for its answer on done (buffered: serve sends
// once). ok is false when run returned first without serving it.
func call[T, R any](b *batches[T], req T, done <-chan R) (r R, ok bool) {
	select {
	case b.reqs <- req:
	case <-b.stopped:
		return r, false
	}
	select {
	case r = <-done:
		return r, true
	case <-b.stopped:
		// run may have served it on its way out.
		select {
		case r = <-done:
			return r, true
		default:
			return r, false
		}
	}
}
