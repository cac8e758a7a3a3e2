package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// SyncSpec is what StartSync sets.
type SyncSpec struct {
	ConnectionID string
	Integration  string
	Model        string
	Mode         Mode
	Frequency    time.Duration
}

// UpsertSync creates the sync of spec's connection and model, or updates its mode and
// frequency, makes it active and due now. An existing sync of another integration is
// ErrIntegrationMismatch.
func UpsertSync(ctx context.Context, tx Tx, tenantID string, spec SyncSpec) (*Sync, error) {
	row := tx.QueryRow(ctx, `INSERT INTO syncs AS s (tenant_id, connection_id, integration, model, mode, frequency_secs, next_run_at)
		VALUES ($1, $2, $3, $4, $5, $6, now())
		ON CONFLICT (tenant_id, connection_id, model) DO UPDATE
		SET mode = excluded.mode, frequency_secs = excluded.frequency_secs, state = 'active',
		    next_run_at = now(), updated_at = now()
		WHERE s.integration = excluded.integration
		RETURNING `+syncColumns,
		tenantID, spec.ConnectionID, spec.Integration, spec.Model, spec.Mode, int32(spec.Frequency/time.Second))
	s, err := scanSync(row)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrIntegrationMismatch
	}
	if err != nil {
		return nil, fmt.Errorf("store: upsert sync: %w", err)
	}
	return s, nil
}

// GetSync returns the sync of a connection's model; with forUpdate it locks the row until the
// transaction ends (every change to a sync's run takes this lock first).
func GetSync(ctx context.Context, tx Tx, tenantID, connectionID, model string, forUpdate bool) (*Sync, error) {
	sql := `SELECT ` + syncColumns + ` FROM syncs WHERE tenant_id = $1 AND connection_id = $2 AND model = $3`
	if forUpdate {
		sql += ` FOR UPDATE`
	}
	s, err := scanSync(tx.QueryRow(ctx, sql, tenantID, connectionID, model))
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("store: get sync: %w", err)
	}
	return s, err
}

// ListSyncs returns up to limit syncs ordered by (created_at, id) after the given position
// (zero values: from the start), optionally of one connection.
func ListSyncs(ctx context.Context, tx Tx, tenantID, connectionID string, afterCreated time.Time, afterID string, limit int) ([]*Sync, error) {
	args := []any{tenantID}
	sql := `SELECT ` + syncColumns + ` FROM syncs WHERE tenant_id = $1`
	if afterID != "" {
		args = append(args, afterCreated, afterID)
		sql += ` AND (created_at, id) > ($2, $3::uuid)`
	}
	if connectionID != "" {
		args = append(args, connectionID)
		sql += fmt.Sprintf(` AND connection_id = $%d`, len(args))
	}
	args = append(args, limit)
	sql += fmt.Sprintf(` ORDER BY created_at, id LIMIT $%d`, len(args))
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list syncs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (*Sync, error) { return scanSync(r) })
	if err != nil {
		return nil, fmt.Errorf("store: list syncs: %w", err)
	}
	return out, nil
}

// SetState pauses or activates a sync. Activating makes it due now; pausing clears its next
// run and its job.
func SetState(ctx context.Context, tx Tx, tenantID, syncID string, state State) (*Sync, error) {
	row := tx.QueryRow(ctx, `UPDATE syncs SET state = $3,
		    next_run_at = CASE WHEN $3 = 'active' THEN now() END,
		    job_id = CASE WHEN $3 = 'active' THEN job_id END,
		    updated_at = now()
		WHERE tenant_id = $1 AND id = $2 RETURNING `+syncColumns, tenantID, syncID, state)
	s, err := scanSync(row)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("store: set state: %w", err)
	}
	return s, err
}

// SetJob records the River job that runs the sync next and when it is due.
func SetJob(ctx context.Context, tx Tx, tenantID, syncID string, jobID int64, nextRunAt time.Time) error {
	_, err := tx.Exec(ctx, `UPDATE syncs SET job_id = $3, next_run_at = $4, updated_at = now()
		WHERE tenant_id = $1 AND id = $2`, tenantID, syncID, jobID, nextRunAt)
	if err != nil {
		return fmt.Errorf("store: set job: %w", err)
	}
	return nil
}

// RequestFullResync makes the sync's next run a full one.
func RequestFullResync(ctx context.Context, tx Tx, tenantID, syncID string) error {
	_, err := tx.Exec(ctx, `UPDATE syncs SET full_resync = true, updated_at = now()
		WHERE tenant_id = $1 AND id = $2`, tenantID, syncID)
	if err != nil {
		return fmt.Errorf("store: request full resync: %w", err)
	}
	return nil
}

// BeginRun starts a run of the locked sync s for River job jobID, or resumes the run in
// progress (a retried, rescued or snoozed job): a resumed run keeps its number, its lower bound
// and its page position. A new run is full when the sync's mode is full or a full resync was
// requested; an incremental run starts from the checkpoint. s must have been read with
// forUpdate in tx; BeginRun returns it updated.
func BeginRun(ctx context.Context, tx Tx, s *Sync, jobID int64) (*Sync, error) {
	if s.State != StateActive {
		return nil, ErrPaused
	}
	var row pgx.Row
	if s.Running() {
		row = tx.QueryRow(ctx, `UPDATE syncs SET job_id = $3, updated_at = now()
			WHERE tenant_id = $1 AND id = $2 RETURNING `+syncColumns, s.TenantID, s.ID, jobID)
	} else {
		row = tx.QueryRow(ctx, `UPDATE syncs SET job_id = $3, run_number = run_number + 1, run_status = 'running',
			    run_full = (mode = 'full' OR full_resync),
			    run_since = CASE WHEN mode = 'full' OR full_resync THEN NULL ELSE checkpoint END,
			    run_page_cursor = NULL, run_high_water = NULL,
			    run_added = 0, run_updated = 0, run_deleted = 0, run_pages = 0,
			    run_started_at = now(), run_finished_at = NULL, full_resync = false, updated_at = now()
			WHERE tenant_id = $1 AND id = $2 RETURNING `+syncColumns, s.TenantID, s.ID, jobID)
	}
	out, err := scanSync(row)
	if err != nil {
		return nil, fmt.Errorf("store: begin run: %w", err)
	}
	return out, nil
}

// lockRunSQL locks the sync row and reads what checkRun needs.
const lockRunSQL = `SELECT state, run_number, run_status, run_full, mode, connection_id::text, model
	FROM syncs WHERE tenant_id = $1 AND id = $2 FOR UPDATE`

// lockRun locks the sync row and checks that run is its current run and that it is active.
func lockRun(ctx context.Context, tx Tx, tenantID, syncID string, run int64) (mode Mode, full bool, connectionID, model string, err error) {
	return checkRun(tx.QueryRow(ctx, lockRunSQL, tenantID, syncID), run)
}

// checkRun scans the row of lockRunSQL and checks that run is the sync's current run and that
// the sync is active.
func checkRun(row pgx.Row, run int64) (mode Mode, full bool, connectionID, model string, err error) {
	var (
		state  State
		number int64
		status RunStatus
	)
	err = row.Scan(&state, &number, &status, &full, &mode, &connectionID, &model)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, "", "", ErrNotFound
	}
	if err != nil {
		return "", false, "", "", fmt.Errorf("store: lock run: %w", err)
	}
	if number != run || status != RunRunning {
		return "", false, "", "", ErrRunSuperseded
	}
	if state != StateActive {
		return "", false, "", "", ErrPaused
	}
	return mode, full, connectionID, model, nil
}

// FailRun records a failed attempt of run: the error is kept for GetSyncStatus. With final
// (no retry will follow) the run ends as failed — without any delete detection, whatever its
// mode — and the next run is due at nextRunAt, starting afresh from the checkpoint.
func FailRun(ctx context.Context, tx Tx, tenantID, syncID string, run int64, msg string, final bool, nextRunAt time.Time) error {
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	if !final {
		_, err := tx.Exec(ctx, `UPDATE syncs SET last_error = $4, updated_at = now()
			WHERE tenant_id = $1 AND id = $2 AND run_number = $3`, tenantID, syncID, run, msg)
		if err != nil {
			return fmt.Errorf("store: fail run: %w", err)
		}
		return nil
	}
	_, err := tx.Exec(ctx, `UPDATE syncs SET last_error = $4, run_status = 'failed', run_finished_at = now(),
		    run_page_cursor = NULL,
		    last_number = run_number, last_status = 'failed', last_full = run_full, last_added = run_added,
		    last_updated = run_updated, last_deleted = 0, last_pages = run_pages,
		    last_started_at = run_started_at, last_finished_at = now(),
		    next_run_at = CASE WHEN state = 'active' THEN $5::timestamptz END, job_id = NULL, updated_at = now()
		WHERE tenant_id = $1 AND id = $2 AND run_number = $3 AND run_status = 'running'`,
		tenantID, syncID, run, msg, nextRunAt)
	if err != nil {
		return fmt.Errorf("store: fail run: %w", err)
	}
	return nil
}

// Due is an active sync whose next run is due and that has no live River job.
type Due struct {
	TenantID, ConnectionID, Model string
}

// DueSyncs lists, across tenants, up to limit active syncs due before now whose recorded job is
// not waiting or running in River (liveStates), oldest due first. It needs a platform
// transaction (pgtenant.DB.InPlatformTx): the platform policy on syncs is read-only.
func DueSyncs(ctx context.Context, tx Tx, now time.Time, limit int) ([]Due, error) {
	rows, err := tx.Query(ctx, `SELECT s.tenant_id::text, s.connection_id::text, s.model FROM syncs s
		WHERE s.state = 'active' AND s.next_run_at <= $1
		  AND NOT EXISTS (SELECT 1 FROM river_job j WHERE j.id = s.job_id
		                  AND j.state IN ('available', 'pending', 'running', 'retryable', 'scheduled'))
		ORDER BY s.next_run_at LIMIT $2`, now, limit)
	if err != nil {
		return nil, fmt.Errorf("store: due syncs: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Due, error) {
		var d Due
		err := r.Scan(&d.TenantID, &d.ConnectionID, &d.Model)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: due syncs: %w", err)
	}
	return out, nil
}

// DueCount counts the tenant's active syncs that are due (or running) at now, up to limit: how
// much work the tenant has queued, which the engine turns into a River priority.
func DueCount(ctx context.Context, tx Tx, tenantID string, now time.Time, limit int) (int, error) {
	var n int
	err := tx.QueryRow(ctx, `SELECT count(*) FROM (SELECT 1 FROM syncs
		WHERE tenant_id = $1 AND state = 'active' AND next_run_at <= $2 LIMIT $3) due`, tenantID, now, limit).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("store: due count: %w", err)
	}
	return n, nil
}

// Park moves an active sync's next run to until and forgets its job (its tenant is suspended:
// the job was cancelled, and the reconciler must not reschedule it before until).
func Park(ctx context.Context, tx Tx, tenantID, connectionID, model string, until time.Time) error {
	_, err := tx.Exec(ctx, `UPDATE syncs SET next_run_at = $4, job_id = NULL, updated_at = now()
		WHERE tenant_id = $1 AND connection_id = $2 AND model = $3 AND state = 'active'`, tenantID, connectionID, model, until)
	if err != nil {
		return fmt.Errorf("store: park: %w", err)
	}
	return nil
}
