package packs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// writePack writes one loaded pack inside tx and counts what it wrote.
// Re-registering updates rows in place; actions, sensors and rules of the
// pack that are gone from disk are disabled, not deleted, so executions that
// name them stay readable. A rule naming an action or trigger that exists
// neither in this pack nor in the database fails the whole pack; the caller
// rolls tx back then.
func writePack(ctx context.Context, tx pgx.Tx, p *Pack) (*RegisterResult, error) {
	res := &RegisterResult{Pack: p.Ref, Dir: p.Dir, KeptRules: []KeptRule{}}
	if _, err := tx.Exec(ctx, `INSERT INTO attune.pack (ref, label, description, version, path)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (ref) DO UPDATE SET label = EXCLUDED.label, description = EXCLUDED.description,
			version = EXCLUDED.version, path = EXCLUDED.path, updated = now()`,
		p.Ref, p.Label, p.Description, p.Version, p.Dir); err != nil {
		return nil, fmt.Errorf("error writing pack %s: %w", p.Ref, err)
	}

	// Not nil: nil is sent as NULL, and NOT ref = ANY(NULL) is NULL, so the
	// last action gone from disk would stay enabled.
	actionRefs := []string{}
	for _, a := range p.Actions {
		params, resultSchema, extra, err := marshal3(a.Parameters, a.ResultSchema, a.Extra)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", a.File, err)
		}
		var timeout *int
		if a.TimeoutSeconds > 0 {
			timeout = &a.TimeoutSeconds
		}
		tags := a.Tags
		if tags == nil {
			tags = []string{}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO attune.action (ref, pack_ref, name, label, description, enabled,
				runner_type, entry_point, path, parameters, result_schema, timeout_seconds, parameter_delivery,
				parameter_format, output_format, max_retries, tags, extra)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
			ON CONFLICT (ref) DO UPDATE SET pack_ref = EXCLUDED.pack_ref, name = EXCLUDED.name,
				label = EXCLUDED.label, description = EXCLUDED.description, enabled = EXCLUDED.enabled,
				runner_type = EXCLUDED.runner_type, entry_point = EXCLUDED.entry_point, path = EXCLUDED.path,
				parameters = EXCLUDED.parameters, result_schema = EXCLUDED.result_schema,
				timeout_seconds = EXCLUDED.timeout_seconds, parameter_delivery = EXCLUDED.parameter_delivery,
				parameter_format = EXCLUDED.parameter_format, output_format = EXCLUDED.output_format,
				max_retries = EXCLUDED.max_retries, tags = EXCLUDED.tags, extra = EXCLUDED.extra, updated = now()`,
			a.Ref, p.Ref, a.Name, a.Label, a.Description, a.Enabled, a.RunnerType, a.EntryPoint, a.Path,
			params, resultSchema, timeout, a.ParameterDelivery, a.ParameterFormat, a.OutputFormat,
			a.MaxRetries, tags, extra); err != nil {
			return nil, fmt.Errorf("%s: error writing action %s: %w", a.File, a.Ref, err)
		}
		actionRefs = append(actionRefs, a.Ref)
		res.Actions++
	}
	rows, err := tx.Query(ctx, `UPDATE attune.action SET enabled = false, updated = now()
		WHERE pack_ref = $1 AND enabled AND NOT ref = ANY($2) RETURNING ref`, p.Ref, actionRefs)
	if err != nil {
		return nil, fmt.Errorf("error disabling removed actions: %w", err)
	}
	if res.DisabledActions, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return nil, fmt.Errorf("error disabling removed actions: %w", err)
	}

	for _, t := range p.Triggers {
		params, payload, extra, err := marshal3(t.Parameters, t.PayloadSchema, t.Extra)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.File, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO attune.trigger (ref, pack_ref, name, description, parameters, payload_schema, extra)
			VALUES ($1, $2, $3, $4, coalesce($5, '{}'::jsonb), $6, $7)
			ON CONFLICT (ref) DO UPDATE SET pack_ref = EXCLUDED.pack_ref, name = EXCLUDED.name,
				description = EXCLUDED.description, parameters = EXCLUDED.parameters,
				payload_schema = EXCLUDED.payload_schema, extra = EXCLUDED.extra, updated = now()`,
			t.Ref, p.Ref, t.Name, t.Description, params, payload, extra); err != nil {
			return nil, fmt.Errorf("%s: error writing trigger %s: %w", t.File, t.Ref, err)
		}
		res.Triggers++
	}

	sensorRefs := []string{} // not nil, as actionRefs
	for _, s := range p.Sensors {
		params, _, extra, err := marshal3(s.Parameters, nil, s.Extra)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.File, err)
		}
		types := s.TriggerTypes
		if types == nil {
			types = []string{}
		}
		if _, err := tx.Exec(ctx, `INSERT INTO attune.sensor (ref, pack_ref, name, description, enabled, runner_type,
				entry_point, path, trigger_types, parameters, extra)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
			ON CONFLICT (ref) DO UPDATE SET pack_ref = EXCLUDED.pack_ref, name = EXCLUDED.name,
				description = EXCLUDED.description, enabled = EXCLUDED.enabled, runner_type = EXCLUDED.runner_type,
				entry_point = EXCLUDED.entry_point, path = EXCLUDED.path, trigger_types = EXCLUDED.trigger_types,
				parameters = EXCLUDED.parameters, extra = EXCLUDED.extra, updated = now()`,
			s.Ref, p.Ref, s.Name, s.Description, s.Enabled, s.RunnerType, s.EntryPoint, s.Path, types,
			params, extra); err != nil {
			return nil, fmt.Errorf("%s: error writing sensor %s: %w", s.File, s.Ref, err)
		}
		sensorRefs = append(sensorRefs, s.Ref)
		res.Sensors++
	}
	if _, err := tx.Exec(ctx, `UPDATE attune.sensor SET enabled = false, updated = now()
		WHERE pack_ref = $1 AND enabled AND NOT ref = ANY($2)`, p.Ref, sensorRefs); err != nil {
		return nil, fmt.Errorf("error disabling removed sensors: %w", err)
	}

	ruleRefs := []string{} // not nil, as actionRefs
	for _, r := range p.Rules {
		for _, ref := range []struct{ table, ref string }{{"action", r.ActionRef}, {"trigger", r.TriggerRef}} {
			var exists bool
			if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM attune."+ref.table+" WHERE ref = $1)", ref.ref).Scan(&exists); err != nil {
				return nil, fmt.Errorf("%s: rule %s: error looking up %s %s: %w", r.File, r.Ref, ref.table, ref.ref, err)
			}
			if !exists {
				return nil, fmt.Errorf("%s: rule %s names %s %q, which is neither in pack %s nor registered; register its pack first", r.File, r.Ref, ref.table, ref.ref, p.Ref)
			}
		}
		// The loader checks action_params against the actions it loaded;
		// one registered before, from another pack, is only known here.
		var declared Params
		if err := tx.QueryRow(ctx, "SELECT parameters FROM attune.action WHERE ref = $1", r.ActionRef).Scan(&declared); err != nil {
			return nil, fmt.Errorf("%s: rule %s: error reading the parameters of action %s: %w", r.File, r.Ref, r.ActionRef, err)
		}
		if pps := checkActionParams(declared, r.ActionRef, r.ActionParams); len(pps) > 0 {
			errs := make([]error, len(pps))
			for i, pp := range pps {
				at := r.File
				if n := r.paramLine(pp.param); n > 0 {
					at = fmt.Sprintf("%s:%d", r.File, n)
				}
				errs[i] = fmt.Errorf("%s: rule %s: %s", at, r.Ref, pp.msg)
			}
			return nil, errors.Join(errs...)
		}
		var schema []byte
		if err := tx.QueryRow(ctx, "SELECT parameters FROM attune.trigger WHERE ref = $1", r.TriggerRef).Scan(&schema); err != nil {
			return nil, fmt.Errorf("%s: rule %s: error reading the parameters of trigger %s: %w", r.File, r.Ref, r.TriggerRef, err)
		}
		var triggerSchema map[string]any
		if err := json.Unmarshal(schema, &triggerSchema); err != nil {
			return nil, fmt.Errorf("%s: rule %s: the stored parameters of trigger %s are not JSON: %w", r.File, r.Ref, r.TriggerRef, err)
		}
		if len(triggerSchema) > 0 {
			tp := r.TriggerParams
			if tp == nil {
				tp = map[string]any{}
			}
			if err := ValidateAgainst(triggerSchema, tp); err != nil {
				return nil, fmt.Errorf("%s: rule %s: trigger_params do not fit trigger %s: %w", r.File, r.Ref, r.TriggerRef, err)
			}
		}
		tparams, aparams, extra, err := marshal3(r.TriggerParams, r.ActionParams, r.Extra)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.File, err)
		}
		conds, err := json.Marshal(r.Conditions)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.File, err)
		}
		// A rule keeps the state attune rule enable/disable gave it unless
		// its YAML's enabled changed since the last registration: the YAML
		// is what was written when the pack was, the command what someone
		// chose since.
		var enabled bool
		if err := tx.QueryRow(ctx, `INSERT INTO attune.rule AS old (ref, pack_ref, name, description, trigger_ref, trigger_params,
				conditions, action_ref, action_params, enabled, yaml_enabled, extra)
			VALUES ($1, $2, $3, $4, $5, coalesce($6, '{}'::jsonb), coalesce($7, '[]'::jsonb), $8, coalesce($9, '{}'::jsonb), $10, $10, $11)
			ON CONFLICT (ref) DO UPDATE SET pack_ref = EXCLUDED.pack_ref, name = EXCLUDED.name,
				description = EXCLUDED.description, trigger_ref = EXCLUDED.trigger_ref,
				trigger_params = EXCLUDED.trigger_params, conditions = EXCLUDED.conditions,
				action_ref = EXCLUDED.action_ref, action_params = EXCLUDED.action_params,
				enabled = CASE WHEN old.yaml_enabled = EXCLUDED.yaml_enabled THEN old.enabled ELSE EXCLUDED.enabled END,
				yaml_enabled = EXCLUDED.yaml_enabled, extra = EXCLUDED.extra, updated = now()
			RETURNING enabled`,
			r.Ref, p.Ref, r.Name, r.Description, r.TriggerRef, tparams, nullIfNull(conds), r.ActionRef, aparams,
			r.Enabled, extra).Scan(&enabled); err != nil {
			return nil, fmt.Errorf("%s: error writing rule %s: %w", r.File, r.Ref, err)
		}
		if enabled != r.Enabled {
			res.KeptRules = append(res.KeptRules, KeptRule{Ref: r.Ref, Enabled: enabled})
		}
		ruleRefs = append(ruleRefs, r.Ref)
		res.Rules++
	}
	// A rule gone from disk is disabled once, when it goes; one enabled
	// again by hand while its file stays away keeps that state, as above.
	if _, err := tx.Exec(ctx, `UPDATE attune.rule SET enabled = false, yaml_enabled = NULL, updated = now()
		WHERE pack_ref = $1 AND yaml_enabled IS NOT NULL AND NOT ref = ANY($2)`, p.Ref, ruleRefs); err != nil {
		return nil, fmt.Errorf("error disabling removed rules: %w", err)
	}
	if err := writePolicies(ctx, tx, p); err != nil {
		return nil, err
	}
	// Running sensor supervisors re-read their rules; the notification is
	// delivered when the transaction commits, with what it wrote.
	if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", RuleChannel, p.Ref); err != nil {
		return nil, fmt.Errorf("error notifying %s: %w", RuleChannel, err)
	}
	return res, nil
}

func marshal3(a, b, c any) (ja, jb, jc []byte, err error) {
	enc := func(v any) ([]byte, error) {
		switch t := v.(type) {
		case nil:
			return nil, nil
		case map[string]any:
			if t == nil {
				return nil, nil
			}
		case Params:
			if t == nil {
				return []byte("{}"), nil
			}
		}
		return json.Marshal(v)
	}
	if ja, err = enc(a); err != nil {
		return
	}
	if jb, err = enc(b); err != nil {
		return
	}
	if jc, err = enc(c); err != nil {
		return
	}
	if jc == nil {
		jc = []byte("{}")
	}
	return
}

func nullIfNull(b []byte) []byte {
	if string(b) == "null" {
		return nil
	}
	return b
}
