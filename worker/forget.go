package worker

import (
	"context"
	"fmt"
	"time"
)

// forgetWorkersAfter is how long an inactive worker's row is kept: every
// serve run leaves one, and attune.worker would grow for ever. Executions
// keep the name they ran on.
const forgetWorkersAfter = 7 * 24 * time.Hour

// forgetOldWorkers deletes the rows of workers inactive for longer than
// forgetWorkersAfter. Any replica may do it: one DELETE
// on a small table, so doing it each heartbeat costs nothing worth a lock.
func (s *Server) forgetOldWorkers(ctx context.Context) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM attune.worker WHERE status = 'inactive' AND heartbeat_at < now() - $1::interval`,
		forgetWorkersAfter.String())
	if err != nil {
		return fmt.Errorf("error deleting old worker rows: %w", err)
	}
	if n := tag.RowsAffected(); n > 0 {
		s.log.Info("deleted the rows of workers inactive for over 7 days", "workers", n)
	}
	return nil
}
