package audit

// Queued returns how many of tenant's events wait behind its write in flight.
func (g *Group) Queued(tenant string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if q, ok := g.queues[tenant]; ok {
		return len(q.waiting)
	}
	return 0
}
