// Package purge deletes everything the sync service holds for a tenant that is being
// offboarded (identity's deletion saga, TenantDataService.PurgeTenant): the tenant's River jobs
// (running ones cancelled first), syncs with their checkpoints and run positions, records (the
// change feed), webhook deliveries (dead letters included) and webhook endpoints.
//
// One Purge is bounded: each step deletes at most Config.Batch rows, in its own short
// transaction, so a tenant with millions of records never holds locks for long or bloats one
// transaction; the caller calls again until Result.Done. Every table step runs in the tenant's
// own row-level-security scope (pgtenant.DB.InTx): the app role's policies, not this code,
// keep the deletes inside the tenant. River's job table has no tenant column and no RLS; jobs
// are found by their arguments' tenant_id (RunArgs, DeliverArgs) through River's API.
package purge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/sync/internal/engine"
	"github.com/bulkhead/bulkhead/services/sync/internal/webhook"
)

// DefaultBatch is the most rows one Purge deletes from each table.
const DefaultBatch = 5000

// Tables are the service's tenant tables, in the order Purge empties them, with "river_job"
// (the tenant's jobs) first: cancelling the runs first stops them from writing more while the
// rest goes. webhook_deliveries goes before webhook_endpoints, whose ON DELETE CASCADE would
// otherwise delete an endpoint's deliveries without bound.
var Tables = []string{"river_job", "syncs", "records", "webhook_deliveries", "webhook_endpoints"}

// Config configures a Purger.
type Config struct {
	// DB is the app role's tenant-scoped database.
	DB *pgtenant.DB
	// Jobs is the engine's River client (its job table lives in the same database).
	Jobs *river.Client[pgx.Tx]
	// Batch bounds the rows deleted per table per Purge [DefaultBatch, at most 10,000: River's
	// own limit on one JobDeleteMany].
	Batch  int
	Logger *slog.Logger
}

// Purger deletes tenants' data. Safe for concurrent use.
type Purger struct {
	cfg Config
}

// New checks cfg.
func New(cfg Config) (*Purger, error) {
	switch {
	case cfg.DB == nil:
		return nil, errors.New("purge: Config.DB is required")
	case cfg.Jobs == nil:
		return nil, errors.New("purge: Config.Jobs is required")
	case cfg.Batch < 0 || cfg.Batch > 10_000:
		return nil, fmt.Errorf("purge: Config.Batch %d is not in [1, 10000]", cfg.Batch)
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Purger{cfg: cfg}, nil
}

// Result is what one Purge did.
type Result struct {
	// Deleted counts the rows deleted, all tables together; ByTable by table (see Tables).
	Deleted int64
	ByTable map[string]int64
	// Cancelled counts running jobs asked to stop; they are deleted by a later Purge once River
	// has finalized them.
	Cancelled int
	// Done is true when nothing of the tenant is left, River jobs included.
	Done bool
}

// jobKinds are the kinds of job whose arguments name a tenant.
var jobKinds = []string{engine.RunArgs{}.Kind(), webhook.DeliverArgs{}.Kind()}

// Purge deletes one batch of tenantID's data from every table and reports whether anything is
// left. It does not check that the tenant may be purged: the caller does (identity must say
// the tenant is DELETING). Idempotent: purging a purged tenant deletes nothing and is Done.
// tenantID must be a canonical (lower-case) UUID, as tokens and job arguments carry it.
func (p *Purger) Purge(ctx context.Context, tenantID string) (Result, error) {
	res := Result{ByTable: make(map[string]int64, len(Tables))}
	scope := pgtenant.Scope{TenantID: tenantID}
	argsFilter, err := json.Marshal(map[string]string{"tenant_id": tenantID})
	if err != nil {
		return res, fmt.Errorf("purge: %w", err)
	}
	// `args @> …` uses River's GIN index on args; kinds keep the reconciler's job (no tenant)
	// and any other kind out.
	where := river.NamedArgs{"tenant_args": string(argsFilter)}
	const wherePred = "args @> @tenant_args::jsonb"

	// Jobs: running ones are cancelled (their context ends; a run stops before committing
	// another page, which also rechecks its sync), the rest deleted.
	err = p.cfg.DB.InTx(ctx, scope, func(tx pgx.Tx) error {
		running, err := p.cfg.Jobs.JobListTx(ctx, tx, river.NewJobListParams().Kinds(jobKinds...).
			States(rivertype.JobStateRunning).Where(wherePred, where).First(p.cfg.Batch))
		if err != nil {
			return fmt.Errorf("list running jobs: %w", err)
		}
		for _, j := range running.Jobs {
			if _, err := p.cfg.Jobs.JobCancelTx(ctx, tx, j.ID); err != nil && !errors.Is(err, river.ErrNotFound) {
				return fmt.Errorf("cancel job: %w", err)
			}
		}
		res.Cancelled = len(running.Jobs)
		deleted, err := p.cfg.Jobs.JobDeleteManyTx(ctx, tx, river.NewJobDeleteManyParams().Kinds(jobKinds...).
			Where(wherePred, where).First(p.cfg.Batch))
		if err != nil {
			return fmt.Errorf("delete jobs: %w", err)
		}
		res.ByTable["river_job"] = int64(len(deleted.Jobs))
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("purge: %w", err)
	}

	// Each table in its own transaction: locks are held for one batch only. The tenant_id
	// conditions are redundant with the policies, which are what actually confine the deletes.
	steps := []struct{ table, sql string }{
		{"syncs", `DELETE FROM syncs WHERE tenant_id = $1 AND id IN
			(SELECT id FROM syncs WHERE tenant_id = $1 LIMIT $2)`},
		{"records", `DELETE FROM records WHERE tenant_id = $1 AND (connection_id, model, external_id) IN
			(SELECT connection_id, model, external_id FROM records WHERE tenant_id = $1 LIMIT $2)`},
		{"webhook_deliveries", `DELETE FROM webhook_deliveries WHERE tenant_id = $1 AND id IN
			(SELECT id FROM webhook_deliveries WHERE tenant_id = $1 LIMIT $2)`},
		// Only endpoints without deliveries left, so the cascade deletes nothing unbounded.
		{"webhook_endpoints", `DELETE FROM webhook_endpoints WHERE tenant_id = $1 AND id IN
			(SELECT e.id FROM webhook_endpoints e WHERE e.tenant_id = $1 AND NOT EXISTS
				(SELECT 1 FROM webhook_deliveries d WHERE d.tenant_id = e.tenant_id AND d.endpoint_id = e.id)
			 LIMIT $2)`},
	}
	for _, s := range steps {
		err := p.cfg.DB.InTx(ctx, scope, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, s.sql, tenantID, p.cfg.Batch)
			if err != nil {
				return err
			}
			res.ByTable[s.table] = tag.RowsAffected()
			return nil
		})
		if err != nil {
			return res, fmt.Errorf("purge: %s: %w", s.table, err)
		}
	}
	for _, n := range res.ByTable {
		res.Deleted += n
	}

	// Done only when nothing is left: a run that committed meanwhile, a job still running or
	// locked, or a table's rows beyond the batch make the caller come back.
	err = p.cfg.DB.InTx(ctx, scope, func(tx pgx.Tx) error {
		var left bool
		if err := tx.QueryRow(ctx, `SELECT
				EXISTS (SELECT 1 FROM syncs WHERE tenant_id = $1)
			 OR EXISTS (SELECT 1 FROM records WHERE tenant_id = $1)
			 OR EXISTS (SELECT 1 FROM webhook_deliveries WHERE tenant_id = $1)
			 OR EXISTS (SELECT 1 FROM webhook_endpoints WHERE tenant_id = $1)`, tenantID).Scan(&left); err != nil {
			return err
		}
		if left {
			return nil
		}
		jobs, err := p.cfg.Jobs.JobListTx(ctx, tx, river.NewJobListParams().Kinds(jobKinds...).
			Where(wherePred, where).First(1))
		if err != nil {
			return err
		}
		res.Done = len(jobs.Jobs) == 0
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("purge: check: %w", err)
	}
	// Counts only: never a record's contents or a job's arguments beyond the tenant.
	p.cfg.Logger.InfoContext(ctx, "tenant data purged", "tenant_id", tenantID, "deleted", res.Deleted,
		"river_job", res.ByTable["river_job"], "syncs", res.ByTable["syncs"], "records", res.ByTable["records"],
		"webhook_deliveries", res.ByTable["webhook_deliveries"], "webhook_endpoints", res.ByTable["webhook_endpoints"],
		"running_jobs_cancelled", res.Cancelled, "done", res.Done)
	return res, nil
}
