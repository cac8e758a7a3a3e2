package providertest

import (
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// TimeFormat is how the API writes updated_at: UTC with millisecond precision.
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// seedBase is the updated_at of the first seeded record; seeded records are one minute apart, so
// seeded data is identical in every run.
var seedBase = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// Record is one provider record. On the wire it is a flat JSON object: id, updated_at and the
// fields, e.g. {"id":"3f2a…-0001","updated_at":"2025-01-01T00:01:00.000Z","name":"…"}.
type Record struct {
	ID        string
	UpdatedAt time.Time
	Fields    map[string]string
}

// MarshalJSON writes the flat wire form.
func (r Record) MarshalJSON() ([]byte, error) {
	m := make(map[string]string, len(r.Fields)+2)
	maps.Copy(m, r.Fields)
	m["id"] = r.ID
	m["updated_at"] = r.UpdatedAt.UTC().Format(TimeFormat)
	return json.Marshal(m)
}

// UnmarshalJSON reads the flat wire form.
func (r *Record) UnmarshalJSON(b []byte) error {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	t, err := time.Parse(time.RFC3339Nano, m["updated_at"])
	if err != nil {
		return fmt.Errorf("providertest: record updated_at: %w", err)
	}
	r.ID, r.UpdatedAt = m["id"], t
	delete(m, "id")
	delete(m, "updated_at")
	r.Fields = m
	return nil
}

func (r Record) clone() Record {
	r.Fields = maps.Clone(r.Fields)
	return r
}

// before orders records by (updated_at, id): the order of every listing and of the cursor.
func (r Record) before(t time.Time, id string) bool {
	if c := r.UpdatedAt.Compare(t); c != 0 {
		return c < 0
	}
	return r.ID < id
}

type dataset struct {
	records map[string]Record
	last    time.Time // newest updated_at handed out, so mutations are strictly ordered
}

// accountTag is a short stable tag per account, so record ids differ between accounts and a
// test notices records crossing accounts.
func accountTag(account string) string {
	sum := sha256.Sum256([]byte(account))
	return hex.EncodeToString(sum[:4])
}

// datasetLocked returns the account's records, seeding them on first use; p.mu must be held.
func (p *Provider) datasetLocked(account string) *dataset {
	if d, ok := p.datasets[account]; ok {
		return d
	}
	d := &dataset{records: make(map[string]Record, p.opts.API.SeedRecords)}
	tag := accountTag(account)
	for i := 1; i <= p.opts.API.SeedRecords; i++ {
		r := Record{
			ID:        fmt.Sprintf("%s-%04d", tag, i),
			UpdatedAt: seedBase.Add(time.Duration(i) * time.Minute),
			Fields: map[string]string{
				"name":  fmt.Sprintf("Record %d of %s", i, account),
				"email": fmt.Sprintf("record%d@%s.example", i, tag),
			},
		}
		d.records[r.ID] = r
		d.last = r.UpdatedAt
	}
	p.datasets[account] = d
	return d
}

// tick returns the updated_at for a mutation: now, or just after the newest one if the clock has
// not moved, so every mutation sorts after everything an incremental sync has seen.
func (d *dataset) tick() time.Time {
	t := time.Now().UTC().Truncate(time.Millisecond)
	if !t.After(d.last) {
		t = d.last.Add(time.Millisecond)
	}
	d.last = t
	return t
}

// Records returns the account's current records ordered by (updated_at, id), seeding them on
// first use. It is what a complete sync of the account must end up with.
func (p *Provider) Records(account string) []Record {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.datasetLocked(account)
	out := make([]Record, 0, len(d.records))
	for _, r := range d.records {
		out = append(out, r.clone())
	}
	sortRecords(out)
	return out
}

// PutRecord creates or replaces a record of account with a new updated_at, as a change made at
// the provider between syncs.
func (p *Provider) PutRecord(account, id string, fields map[string]string) (Record, error) {
	if id == "" {
		return Record{}, errors.New("providertest: empty record id")
	}
	if _, ok := fields["id"]; ok {
		return Record{}, errors.New(`providertest: field "id" is reserved`)
	}
	if _, ok := fields["updated_at"]; ok {
		return Record{}, errors.New(`providertest: field "updated_at" is reserved`)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.datasetLocked(account)
	r := Record{ID: id, UpdatedAt: d.tick(), Fields: maps.Clone(fields)}
	d.records[id] = r
	return r.clone(), nil
}

// DeleteRecord removes a record of account; it reports whether the record existed. Deleted
// records simply disappear from listings, as at most providers, so only a full sync notices.
func (p *Provider) DeleteRecord(account, id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.datasetLocked(account)
	_, ok := d.records[id]
	delete(d.records, id)
	return ok
}

func sortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int {
		return cmp.Or(a.UpdatedAt.Compare(b.UpdatedAt), strings.Compare(a.ID, b.ID))
	})
}

// cursor is the position after the last record of a page. Paging by (updated_at, id) rather than
// by offset means a record changed mid-run moves behind the cursor and is seen again, and no
// record is skipped.
type cursor struct {
	updatedAt time.Time
	id        string
}

func (c cursor) encode() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.updatedAt.UnixNano(), 10) + "|" + c.id))
}

func decodeCursor(s string) (cursor, error) {
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursor{}, fmt.Errorf("cursor: %w", err)
	}
	ns, id, ok := strings.Cut(string(raw), "|")
	if !ok || id == "" {
		return cursor{}, errors.New("cursor: malformed")
	}
	n, err := strconv.ParseInt(ns, 10, 64)
	if err != nil {
		return cursor{}, fmt.Errorf("cursor: %w", err)
	}
	return cursor{updatedAt: time.Unix(0, n).UTC(), id: id}, nil
}

// pageLocked returns up to limit records of account with updated_at >= since and after c,
// and the cursor of the next page when there is one; p.mu must be held.
func (p *Provider) pageLocked(account string, since time.Time, c *cursor, limit int) ([]Record, *cursor) {
	d := p.datasetLocked(account)
	all := make([]Record, 0, len(d.records))
	for _, r := range d.records {
		if r.UpdatedAt.Before(since) {
			continue
		}
		if c != nil && (r.before(c.updatedAt, c.id) || (r.UpdatedAt.Equal(c.updatedAt) && r.ID == c.id)) {
			continue
		}
		all = append(all, r.clone())
	}
	sortRecords(all)
	if len(all) <= limit {
		return all, nil
	}
	page := all[:limit]
	last := page[len(page)-1]
	return page, &cursor{updatedAt: last.UpdatedAt, id: last.ID}
}
