package store

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// PageRecord is one record of a page to ingest.
type PageRecord struct {
	ExternalID string
	// Payload is canonical JSON (see definition.Record); Hash is computed from it.
	Payload   []byte
	UpdatedAt time.Time // zero: the provider has no update time
	// Hash, if set, is the record's content hash; nil: SHA-256 of Payload. Records with sealed
	// fields set it (seal.Hash of the plaintext), since their stored payload differs per write.
	Hash []byte
}

// PageResult counts what a page changed.
type PageResult struct {
	Added, Updated int64
	// LastSeq is the feed position of the page's last change (0: no change).
	LastSeq int64
}

// feedLockNamespace is the first key of the per-tenant feed lock ("sync" in ASCII). The
// two-integer form of advisory locks cannot collide with River's, which use the bigint form.
const feedLockNamespace = 0x73796e63

// lockFeedSQL takes the tenant's feed lock until the transaction ends. Every writer of records
// holds it from before it draws sequence values until it commits, so within a tenant changes
// become visible in sequence order, and a reader paging by sequence never skips one that
// commits late. Distinct tenants may share a lock (32-bit hash): that only serializes them.
const lockFeedSQL = `SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))`

// applyPageSQL writes a page and advances the run in one statement, returning the counts of
// added and updated records and the page's last feed position. It runs after lockRunSQL (the
// sync row's lock) and lockFeedSQL in the same pipelined batch, so it checks the run itself:
// when the run is not the sync's current one or the sync is not active, s is empty and the
// statement writes nothing (ApplyPage then reports why from the lock's row).
//
// Records go in with one INSERT … SELECT FROM unnest(…) ON CONFLICT (COPY is refused under RLS
// for a non-owner role). Payloads travel as text[] and are cast once in SQL (measured a little
// faster than a jsonb[] parameter). A record whose content hash is unchanged (and that is not
// deleted) is not rewritten and keeps its sequence value, so it emits nothing; in a full run it
// is still touched to record that this run saw it (last_seen_run), which delete detection
// needs. nextval is drawn for every input row; unused values are gaps, which the feed does not
// mind. `changed_at = now()` in RETURNING is true exactly for rows this transaction changed:
// now() is the transaction's start, and unchanged rows keep an earlier changed_at. The run's
// position and counters are updated by the data-modifying CTE adv, from the same counts.
const applyPageSQL = `WITH s AS MATERIALIZED (SELECT connection_id, model, run_full FROM syncs
	    WHERE tenant_id = $1 AND id = $2 AND run_number = $3 AND run_status = 'running' AND state = 'active'),
	up AS (INSERT INTO records AS r (tenant_id, connection_id, model, external_id, content_hash, payload,
	        provider_updated_at, action, seq, changed_at, last_seen_run)
	    SELECT $1, s.connection_id, s.model, t.external_id, t.content_hash, t.payload::jsonb, t.updated_at,
	        'added', nextval('record_seq'), now(), $3
	    FROM s, unnest($4::text[], $5::bytea[], $6::text[], $7::timestamptz[]) AS t(external_id, content_hash, payload, updated_at)
	    ON CONFLICT (tenant_id, connection_id, model, external_id) DO UPDATE SET
	        content_hash = excluded.content_hash,
	        payload = excluded.payload,
	        provider_updated_at = excluded.provider_updated_at,
	        last_seen_run = excluded.last_seen_run,
	        action = CASE WHEN r.deleted_at IS NOT NULL THEN 'added'
	                      WHEN r.content_hash <> excluded.content_hash THEN 'updated'
	                      ELSE r.action END,
	        seq = CASE WHEN r.deleted_at IS NOT NULL OR r.content_hash <> excluded.content_hash THEN excluded.seq ELSE r.seq END,
	        changed_at = CASE WHEN r.deleted_at IS NOT NULL OR r.content_hash <> excluded.content_hash THEN now() ELSE r.changed_at END,
	        deleted_at = NULL
	    WHERE r.deleted_at IS NOT NULL OR r.content_hash <> excluded.content_hash
	       OR ((SELECT run_full FROM s) AND r.last_seen_run <> excluded.last_seen_run)
	    RETURNING xmax = 0 AS inserted, changed_at = now() AS changed, action, seq),
	n AS (SELECT count(*) FILTER (WHERE inserted OR (changed AND action = 'added')) AS added,
	        count(*) FILTER (WHERE NOT inserted AND changed AND action = 'updated') AS updated,
	        coalesce(max(seq) FILTER (WHERE inserted OR changed), 0) AS last_seq
	    FROM up),
	adv AS (UPDATE syncs SET run_page_cursor = $8,
	        run_high_water = CASE WHEN $9::timestamptz IS NULL THEN run_high_water
	                              ELSE greatest(run_high_water, $9::timestamptz) END,
	        run_added = run_added + n.added, run_updated = run_updated + n.updated, run_pages = run_pages + 1,
	        updated_at = now()
	    FROM n WHERE tenant_id = $1 AND id = $2 AND EXISTS (SELECT FROM s))
	SELECT added, updated, last_seq FROM n`

// ApplyPage commits one page of run: the records (upserted with change detection), the run's
// new page position next ("" after the last page, which FinishRun then ends) and its counters
// — all in tx, so a worker that dies after the commit resumes after this page and one that
// dies before it fetches the page again. Duplicate external ids within the page keep the last
// occurrence. It locks the sync row first and fails with ErrRunSuperseded or ErrPaused without
// writing anything when the run is no longer current or the sync was paused.
//
// The sync row's lock, the feed lock and the write go to the server as one pipelined batch
// (one round trip instead of four): the write checks the run under the lock the batch's first
// statement took, so nothing depends on reading that row first.
func ApplyPage(ctx context.Context, tx Tx, tenantID, syncID string, run int64, recs []PageRecord, next string) (PageResult, error) {
	p := preparePage(recs)
	var nextArg any
	if next != "" {
		nextArg = next
	}
	b := &pgx.Batch{}
	b.Queue(lockRunSQL, tenantID, syncID)
	if len(p.ids) > 0 {
		b.Queue(lockFeedSQL, int32(feedLockNamespace), tenantID)
	}
	b.Queue(applyPageSQL, tenantID, syncID, run, p.ids, p.hashes, p.payloads, p.updated, nextArg, p.highWater)
	br := tx.SendBatch(ctx, b)
	res, err := readApplyPage(br, run, len(p.ids) > 0)
	if cerr := br.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("store: apply page: %w", cerr)
	}
	if err != nil {
		return PageResult{}, err
	}
	return res, nil
}

// readApplyPage reads the results of ApplyPage's batch in order.
func readApplyPage(br pgx.BatchResults, run int64, locked bool) (PageResult, error) {
	if _, _, _, _, err := checkRun(br.QueryRow(), run); err != nil {
		return PageResult{}, err
	}
	if locked {
		if _, err := br.Exec(); err != nil {
			return PageResult{}, fmt.Errorf("store: feed lock: %w", err)
		}
	}
	var res PageResult
	if err := br.QueryRow().Scan(&res.Added, &res.Updated, &res.LastSeq); err != nil {
		return PageResult{}, fmt.Errorf("store: upsert records: %w", err)
	}
	return res, nil
}

// page is a page's records as the arrays applyPageSQL takes.
type page struct {
	ids       []string
	hashes    [][]byte
	payloads  []string
	updated   []*time.Time
	highWater *time.Time // the newest updated-at of the page; nil: none
}

// preparePage hashes recs and keeps the last occurrence of each id: one statement may not
// update a row twice.
func preparePage(recs []PageRecord) page {
	p := page{
		ids:      make([]string, 0, len(recs)),
		hashes:   make([][]byte, 0, len(recs)),
		payloads: make([]string, 0, len(recs)),
		updated:  make([]*time.Time, 0, len(recs)),
	}
	seen := make(map[string]int, len(recs))
	for _, r := range recs {
		sum := r.Hash
		if sum == nil {
			h := sha256.Sum256(r.Payload)
			sum = h[:]
		}
		var ua *time.Time
		if !r.UpdatedAt.IsZero() {
			t := r.UpdatedAt
			ua = &t
			if p.highWater == nil || t.After(*p.highWater) {
				p.highWater = &t
			}
		}
		if i, ok := seen[r.ExternalID]; ok {
			p.hashes[i], p.payloads[i], p.updated[i] = sum, string(r.Payload), ua
			continue
		}
		seen[r.ExternalID] = len(p.ids)
		p.ids = append(p.ids, r.ExternalID)
		p.hashes = append(p.hashes, sum)
		p.payloads = append(p.payloads, string(r.Payload))
		p.updated = append(p.updated, ua)
	}
	return p
}

// FinishResult is what a finished run changed.
type FinishResult struct {
	Run     Run
	Deleted int64
	// LastSeq is the feed position of the last deletion (0: none).
	LastSeq int64
}

// FinishRun ends run successfully after its last page: for a full run every record of the
// sync that this run did not see is marked deleted (never for a failed or unfinished run —
// this is the only place deletions happen); the checkpoint advances to the run's high-water
// mark; the run becomes the last run; the next run is due at nextRunAt when the sync is active.
func FinishRun(ctx context.Context, tx Tx, tenantID, syncID string, run int64, nextRunAt time.Time) (FinishResult, error) {
	_, full, connectionID, model, err := lockRun(ctx, tx, tenantID, syncID, run)
	if err != nil {
		return FinishResult{}, err
	}
	var deleted, lastSeq int64
	if full {
		if _, err := tx.Exec(ctx, lockFeedSQL, int32(feedLockNamespace), tenantID); err != nil {
			return FinishResult{}, fmt.Errorf("store: feed lock: %w", err)
		}
		err := tx.QueryRow(ctx, `WITH d AS (UPDATE records SET action = 'deleted', deleted_at = now(), changed_at = now(),
			    seq = nextval('record_seq')
			WHERE tenant_id = $1 AND connection_id = $2 AND model = $3
			  AND deleted_at IS NULL AND last_seen_run < $4 RETURNING seq)
			SELECT count(*), coalesce(max(seq), 0) FROM d`, tenantID, connectionID, model, run).Scan(&deleted, &lastSeq)
		if err != nil {
			return FinishResult{}, fmt.Errorf("store: detect deletions: %w", err)
		}
	}
	s, err := scanSync(tx.QueryRow(ctx, `UPDATE syncs SET run_status = 'succeeded', run_finished_at = now(),
		    run_deleted = $4, run_page_cursor = NULL,
		    checkpoint = CASE WHEN run_high_water IS NULL THEN checkpoint
		                      ELSE greatest(checkpoint, run_high_water) END,
		    last_number = run_number, last_status = 'succeeded', last_full = run_full,
		    last_added = run_added, last_updated = run_updated, last_deleted = $4, last_pages = run_pages,
		    last_started_at = run_started_at, last_finished_at = now(), last_error = '',
		    next_run_at = $5, updated_at = now()
		WHERE tenant_id = $1 AND id = $2 AND run_number = $3 RETURNING `+syncColumns,
		tenantID, syncID, run, deleted, nextRunAt))
	if err != nil {
		return FinishResult{}, fmt.Errorf("store: finish run: %w", err)
	}
	return FinishResult{Run: s.Last, Deleted: deleted, LastSeq: lastSeq}, nil
}

// Action is a record's latest change.
type Action string

// Actions.
const (
	ActionAdded   Action = "added"
	ActionUpdated Action = "updated"
	ActionDeleted Action = "deleted"
)

// Record is a stored record in its latest state.
type Record struct {
	ConnectionID      string
	Model             string
	ExternalID        string
	Action            Action
	Payload           []byte // as stored (jsonb's text form)
	ContentHash       []byte
	ProviderUpdatedAt *time.Time
	ChangedAt         time.Time
	DeletedAt         *time.Time
	Seq               int64
}

// FeedQuery selects a slice of a tenant's change feed.
type FeedQuery struct {
	// ConnectionID and Model narrow the feed; empty means all (Model requires ConnectionID).
	ConnectionID, Model string
	// After is the sequence value of the last change already seen.
	After int64
	// ModifiedAfter, if set, skips changes committed at or before it.
	ModifiedAfter *time.Time
	Limit         int
}

// ListFeed returns up to q.Limit changes after q.After in sequence order: the records whose
// latest change is after the cursor.
func ListFeed(ctx context.Context, tx Tx, tenantID string, q FeedQuery) ([]Record, error) {
	args := []any{tenantID, q.After}
	sql := `SELECT connection_id::text, model, external_id, action, payload::text, content_hash,
		    provider_updated_at, changed_at, deleted_at, seq
		FROM records WHERE tenant_id = $1 AND seq > $2`
	if q.ConnectionID != "" {
		args = append(args, q.ConnectionID)
		sql += fmt.Sprintf(` AND connection_id = $%d`, len(args))
		if q.Model != "" {
			args = append(args, q.Model)
			sql += fmt.Sprintf(` AND model = $%d`, len(args))
		}
	}
	if q.ModifiedAfter != nil {
		args = append(args, *q.ModifiedAfter)
		sql += fmt.Sprintf(` AND changed_at > $%d`, len(args))
	}
	args = append(args, q.Limit)
	sql += fmt.Sprintf(` ORDER BY seq LIMIT $%d`, len(args))
	rows, err := tx.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("store: list feed: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Record, error) {
		var rec Record
		var payload string
		err := r.Scan(&rec.ConnectionID, &rec.Model, &rec.ExternalID, &rec.Action, &payload, &rec.ContentHash,
			&rec.ProviderUpdatedAt, &rec.ChangedAt, &rec.DeletedAt, &rec.Seq)
		rec.Payload = []byte(payload)
		return rec, err
	})
	if err != nil {
		return nil, fmt.Errorf("store: list feed: %w", err)
	}
	return out, nil
}

// ErrBadCursor means a feed cursor was not produced by EncodeCursor.
var ErrBadCursor = errors.New("store: malformed feed cursor")

// cursorPrefix versions the cursor format.
const cursorPrefix = "v1."

// EncodeCursor renders a feed position as an opaque cursor.
func EncodeCursor(seq int64) string {
	return base64.RawURLEncoding.EncodeToString([]byte(cursorPrefix + strconv.FormatInt(seq, 10)))
}

// DecodeCursor parses a cursor; "" is the start of the feed (0).
func DecodeCursor(c string) (int64, error) {
	if c == "" {
		return 0, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || !strings.HasPrefix(string(raw), cursorPrefix) {
		return 0, ErrBadCursor
	}
	n, err := strconv.ParseInt(strings.TrimPrefix(string(raw), cursorPrefix), 10, 64)
	if err != nil || n < 0 {
		return 0, ErrBadCursor
	}
	return n, nil
}
