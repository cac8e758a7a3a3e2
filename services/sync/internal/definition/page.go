package definition

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// ErrBadResponse means a provider's answer does not match the definition (not JSON, no records
// array, a record without id…). Retrying will not help until the definition is fixed.
var ErrBadResponse = errors.New("definition: response does not match the definition")

// ErrForeignNextPage means a Link header pointed outside the definition's origin: following it
// would send the connection's credential to another host.
var ErrForeignNextPage = errors.New("definition: next-page link leaves the provider's origin")

// RequestURL returns the URL of the page at position ("" for the first page) for a run with
// lower bound since (zero: everything).
func (d *Definition) RequestURL(baseURL, position string, since time.Time) (string, error) {
	base, err := url.Parse(strings.TrimSuffix(baseURL, "/"))
	if err != nil || base.Host == "" {
		return "", fmt.Errorf("definition %s/%s: bad base URL", d.Integration, d.Model)
	}
	if d.Pagination.Style == StyleLink && position != "" {
		next, err := url.Parse(position)
		if err != nil || next.Scheme != base.Scheme || next.Host != base.Host || next.User != nil {
			return "", ErrForeignNextPage
		}
		return next.String(), nil
	}
	u := *base
	u.Path = base.Path + d.Endpoint
	q := url.Values{}
	for k, v := range d.Query {
		q.Set(k, v)
	}
	p := d.Pagination
	if p.LimitParam != "" {
		q.Set(p.LimitParam, strconv.Itoa(p.PageSize))
	}
	if d.Incremental != nil && !since.IsZero() {
		q.Set(d.Incremental.Param, formatTime(since, d.Incremental.Format))
	}
	if position != "" {
		switch p.Style {
		case StyleCursor:
			q.Set(p.CursorParam, position)
		case StyleOffset:
			q.Set(p.OffsetParam, position)
		case StylePage:
			q.Set(p.PageParam, position)
		}
	} else if p.Style == StylePage {
		q.Set(p.PageParam, "1")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

func formatTime(t time.Time, format string) string {
	t = t.UTC()
	switch format {
	case "", FormatRFC3339:
		return t.Format(time.RFC3339Nano)
	case FormatUnix:
		return strconv.FormatInt(t.Unix(), 10)
	case FormatUnixMS:
		return strconv.FormatInt(t.UnixMilli(), 10)
	}
	return t.Format(format)
}

// ParsePage reads one page answered at reqURL for the page at position: its records and the
// position of the next page ("" after the last one).
func (d *Definition) ParsePage(body []byte, header http.Header, reqURL, position string) (Page, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return Page{}, fmt.Errorf("%w: body is not JSON", ErrBadResponse)
	}
	rawRecords := doc
	if d.RecordsPath != "" {
		rawRecords = lookup(doc, d.RecordsPath)
	}
	var items []any
	switch v := rawRecords.(type) {
	case []any:
		items = v
	case nil:
		// Some providers omit the array on an empty page.
	default:
		return Page{}, fmt.Errorf("%w: %q is not an array", ErrBadResponse, d.RecordsPath)
	}
	page := Page{Records: make([]Record, 0, len(items))}
	for i, it := range items {
		obj, ok := it.(map[string]any)
		if !ok {
			return Page{}, fmt.Errorf("%w: record %d is not an object", ErrBadResponse, i)
		}
		id := scalarString(lookup(obj, d.PrimaryKey))
		if id == "" || len(id) > 512 {
			return Page{}, fmt.Errorf("%w: record %d has no usable %q", ErrBadResponse, i, d.PrimaryKey)
		}
		rec := Record{ExternalID: id}
		if d.UpdatedAt != "" {
			if v := lookup(obj, d.UpdatedAt); v != nil {
				t, err := parseTime(v, d.UpdatedAtFormat)
				if err != nil {
					return Page{}, fmt.Errorf("%w: record %d: %q: %v", ErrBadResponse, i, d.UpdatedAt, err)
				}
				rec.UpdatedAt = t
			}
		}
		// encoding/json sorts map keys and keeps json.Number as sent: the canonical form.
		payload, err := json.Marshal(obj)
		if err != nil {
			return Page{}, fmt.Errorf("%w: record %d: %v", ErrBadResponse, i, err)
		}
		rec.Payload = payload
		page.Records = append(page.Records, rec)
	}
	next, err := d.nextPosition(doc, header, reqURL, position, len(items))
	if err != nil {
		return Page{}, err
	}
	if next != "" && next == position {
		return Page{}, fmt.Errorf("%w: the provider returned the same position again", ErrBadResponse)
	}
	page.Next = next
	return page, nil
}

func (d *Definition) nextPosition(doc any, header http.Header, reqURL, position string, n int) (string, error) {
	p := d.Pagination
	switch p.Style {
	case StyleCursor:
		if n == 0 {
			return "", nil
		}
		return scalarString(lookup(doc, p.NextCursorPath)), nil
	case StyleLink:
		next := linkNext(header.Values("Link"))
		if next == "" {
			return "", nil
		}
		base, err := url.Parse(reqURL)
		if err != nil {
			return "", fmt.Errorf("%w: request URL", ErrBadResponse)
		}
		u, err := base.Parse(next)
		if err != nil {
			return "", fmt.Errorf("%w: Link header", ErrBadResponse)
		}
		if u.Scheme != base.Scheme || u.Host != base.Host || u.User != nil {
			return "", ErrForeignNextPage
		}
		return u.String(), nil
	case StyleOffset:
		if n == 0 {
			return "", nil
		}
		if p.NextOffsetPath != "" {
			return scalarString(lookup(doc, p.NextOffsetPath)), nil
		}
		if n < p.PageSize {
			return "", nil
		}
		cur, _ := strconv.Atoi(position)
		return strconv.Itoa(cur + n), nil
	case StylePage:
		if n < p.PageSize {
			return "", nil
		}
		cur, _ := strconv.Atoi(position)
		if cur < 1 {
			cur = 1
		}
		return strconv.Itoa(cur + 1), nil
	}
	return "", fmt.Errorf("definition: unknown pagination style %q", p.Style)
}

// linkNext returns the target of rel="next" in RFC 8288 Link header values.
func linkNext(values []string) string {
	for _, v := range values {
		for link := range strings.SplitSeq(v, ",") {
			target, params, ok := strings.Cut(link, ";")
			if !ok {
				continue
			}
			target = strings.TrimSpace(target)
			if !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
				continue
			}
			for param := range strings.SplitSeq(params, ";") {
				k, val, _ := strings.Cut(strings.TrimSpace(param), "=")
				if strings.EqualFold(k, "rel") {
					for rel := range strings.FieldsSeq(strings.Trim(val, `"`)) {
						if strings.EqualFold(rel, "next") {
							return target[1 : len(target)-1]
						}
					}
				}
			}
		}
	}
	return ""
}

// lookup follows a dot path through JSON objects.
func lookup(v any, path string) any {
	for key := range strings.SplitSeq(path, ".") {
		obj, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = obj[key]
	}
	return v
}

// scalarString renders a JSON string or number; anything else is "".
func scalarString(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case json.Number:
		return s.String()
	}
	return ""
}

func parseTime(v any, format string) (time.Time, error) {
	switch format {
	case FormatUnix, FormatUnixMS:
		n, err := strconv.ParseFloat(scalarString(v), 64)
		if err != nil {
			return time.Time{}, errors.New("not a number")
		}
		if format == FormatUnixMS {
			return time.UnixMilli(int64(n)).UTC(), nil
		}
		return time.Unix(int64(n), 0).UTC(), nil
	}
	s := scalarString(v)
	if s == "" {
		return time.Time{}, errors.New("not a string")
	}
	layout := format
	if layout == "" || layout == FormatRFC3339 {
		layout = time.RFC3339Nano
	}
	t, err := time.Parse(layout, s)
	if err != nil {
		return time.Time{}, err
	}
	return t.UTC(), nil
}
