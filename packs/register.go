package packs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// RegisterResult is what registering one pack came to: what was written
// when it registered, else why it was not. Its JSON form, the counts, is what
// `attune pack register -j` prints for each registered pack.
type RegisterResult struct {
	// Pack is the pack ref; empty for a pack whose pack.yaml gave none.
	Pack            string   `json:"pack"`
	Actions         int      `json:"actions"`
	Sensors         int      `json:"sensors"`
	Triggers        int      `json:"triggers"`
	Rules           int      `json:"rules"`
	DisabledActions []string `json:"disabled_actions"`
	// KeptRules are the rules whose state registration left as attune rule
	// enable/disable set it, against their YAML's enabled.
	KeptRules []KeptRule `json:"kept_rules"`

	// Dir is the absolute pack directory, as in [Pack.Dir] and
	// [Problem.PackDir].
	Dir string `json:"-"`
	// Problems are the load problems of this pack, warnings included.
	Problems []Problem `json:"-"`
	// Err is why the pack was not registered, nil when it was. For a pack
	// with load errors it is a *[LoadError] holding its problems; nothing
	// of such a pack is written.
	Err error `json:"-"`
}

// KeptRule is a rule whose state registration did not take from its YAML:
// someone enabled or disabled it (attune rule enable/disable,
// [SetRuleEnabled]) and its YAML's enabled is the same as at the pack's last
// registration, so the YAML has nothing new to say.
type KeptRule struct {
	Ref string `json:"ref"`
	// Enabled is the state kept; the YAML says the opposite.
	Enabled bool `json:"enabled"`
}

// Name is the pack ref, or the pack directory when pack.yaml gave no ref.
func (r *RegisterResult) Name() string {
	if r.Pack != "" {
		return r.Pack
	}
	return r.Dir
}

// Results holds one [RegisterResult] per pack.
type Results []*RegisterResult

// Err joins the errors of the packs that were not registered, each naming
// its pack; nil when every pack registered.
func (rs Results) Err() error {
	var errs []error
	for _, r := range rs {
		if r.Err != nil {
			errs = append(errs, fmt.Errorf("pack %s not registered: %w", r.Name(), r.Err))
		}
	}
	return errors.Join(errs...)
}

// Register writes the packs ps, loaded together with problems (as [LoadAll]
// returns them), inside the caller's transaction tx. Each pack is written
// under a savepoint of its own: a pack that fails is rolled back to it and
// spoils neither the others nor tx. Nothing is visible to other sessions,
// nor notified to the sensor supervisors, before the caller commits tx.
//
// A pack that problems name with an error ([Problem.PackDir]) is not
// written. A rule may name an action or trigger of another pack of ps, in
// whatever order ps lists them: packs are written in passes, each retrying
// the packs that failed in the one before, for as long as a pass registers
// any. Re-registering updates rows in place; actions, sensors and rules of a
// pack that are gone from disk are disabled, not deleted, so executions that
// name them stay readable. A rule keeps the state [SetRuleEnabled] gave it
// while its YAML's enabled stays what it was at the last registration
// ([RegisterResult.KeptRules]); when the YAML's changes, the YAML wins. A
// rule naming an action or trigger that exists neither in its pack nor in
// the database fails its pack.
//
// The results hold one entry per pack of ps, in that order, then one per
// pack that problems name with an error but that is not in ps (its
// pack.yaml did not load, or another pack took its ref), so they account for
// every pack the load met; [Results.Err] joins the failures. When tx itself
// fails (a lost connection, a canceled ctx) every pack not registered by
// then fails with that error, and committing tx fails too.
func Register(ctx context.Context, tx pgx.Tx, ps []*Pack, problems []Problem) Results {
	return register(ctx, tx, ps, problems)
}

// RegisterPool is [Register] for a caller without a transaction: each pack
// is written in a transaction of its own from pool, committed as soon as it
// registers, so a pack that fails leaves the others registered and a pack
// that registers is visible (and notified) at once.
func RegisterPool(ctx context.Context, pool *pgxpool.Pool, ps []*Pack, problems []Problem) Results {
	return register(ctx, pool, ps, problems)
}

// beginner starts the transaction of one pack: a savepoint of a pgx.Tx, or
// a transaction of a pool.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

func register(ctx context.Context, db beginner, ps []*Pack, problems []Problem) Results {
	byDir := map[string][]Problem{}
	var dirs []string // pack directories named by problems, first seen first
	for _, pr := range problems {
		if pr.PackDir == "" {
			continue // not about a pack: nothing to leave out
		}
		if _, seen := byDir[pr.PackDir]; !seen {
			dirs = append(dirs, pr.PackDir)
		}
		byDir[pr.PackDir] = append(byDir[pr.PackDir], pr)
	}

	type attempt struct {
		p *Pack
		r *RegisterResult
	}
	var (
		results Results
		pending []attempt
		given   = map[string]bool{}
	)
	for _, p := range ps {
		if p == nil {
			continue
		}
		given[p.Dir] = true
		r := &RegisterResult{Pack: p.Ref, Dir: p.Dir, Problems: byDir[p.Dir]}
		results = append(results, r)
		if err := AsError(r.Problems); err != nil {
			r.Err = err
			continue
		}
		pending = append(pending, attempt{p, r})
	}
	for _, dir := range dirs {
		if probs := byDir[dir]; !given[dir] && HasErrors(probs) {
			results = append(results, &RegisterResult{Dir: dir, Problems: probs, Err: AsError(probs)})
		}
	}

	// A rule may name an action or trigger of a pack written after its own:
	// retry the failures while a pass registers any, so the order of ps
	// does not matter. Each pass registers a pack or ends the loop, so there
	// are at most len(ps) of them.
	for progress := true; progress && len(pending) > 0; {
		progress = false
		var retry []attempt
		for _, a := range pending {
			written, err := registerOne(ctx, db, a.p)
			if err != nil {
				a.r.Err = err // the last attempt's error is the one reported
				retry = append(retry, a)
				continue
			}
			written.Dir, written.Problems = a.r.Dir, a.r.Problems
			*a.r = *written
			progress = true
		}
		pending = retry
	}
	return results
}

// registerOne writes p in a transaction of its own begun from db, rolled
// back when any of it fails.
func registerOne(ctx context.Context, db beginner, p *Pack) (*RegisterResult, error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("error beginning the transaction of pack %s: %w", p.Ref, err)
	}
	res, err := writePack(ctx, tx, p)
	if err != nil {
		if rbErr := tx.Rollback(ctx); rbErr != nil {
			return nil, errors.Join(err, fmt.Errorf("error rolling back pack %s: %w", p.Ref, rbErr))
		}
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("error committing pack %s: %w", p.Ref, err)
	}
	return res, nil
}
