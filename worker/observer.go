package worker

// OnEvent sets a hook observing each event this replica's sensors stored,
// once committed, with how many executions its rules enqueued and how many
// rules were skipped (metrics); call before Start.
func (s *Server) OnEvent(fn func(trigger string, executions, skipped int)) { s.sensors.onEvent = fn }
