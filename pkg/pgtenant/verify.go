package pgtenant

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// ErrIsolation means a database breaks the isolation rules of the package doc. VerifyIsolation
// wraps it once per violation.
var ErrIsolation = errors.New("pgtenant: isolation rule broken")

// VerifyIsolation checks the database at url (any role may read the catalogs it uses) against
// the rules the package doc lists, and returns every violation, each wrapping ErrIsolation:
//   - appRole is not a superuser, lacks BYPASSRLS, is a member of no role, owns no table and no
//     schema;
//   - every table with a tenant_id column has ROW LEVEL SECURITY enabled and forced and at
//     least one policy.
//
// Services call it in a test after migrating, so a new tenant table without its policy fails
// the build instead of leaking.
func VerifyIsolation(ctx context.Context, url, appRole string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("pgtenant: verify isolation: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	var (
		found                bool
		super, bypass        bool
		memberships, relOwns int
		nspOwns              int
	)
	err = conn.QueryRow(ctx, `SELECT true, r.rolsuper, r.rolbypassrls,
			(SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid),
			(SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid),
			(SELECT count(*) FROM pg_namespace n WHERE n.nspowner = r.oid)
		FROM pg_roles r WHERE r.rolname = $1`, appRole).
		Scan(&found, &super, &bypass, &memberships, &relOwns, &nspOwns)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: app role %q does not exist", ErrIsolation, appRole)
	}
	if err != nil {
		return fmt.Errorf("pgtenant: verify isolation: %w", err)
	}
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrIsolation}, args...)...))
	}
	if super {
		add("app role %q is a superuser", appRole)
	}
	if bypass {
		add("app role %q has BYPASSRLS", appRole)
	}
	if memberships > 0 {
		add("app role %q is a member of %d role(s)", appRole, memberships)
	}
	if relOwns > 0 {
		add("app role %q owns %d relation(s): an owner escapes FORCE ROW LEVEL SECURITY policies it can drop", appRole, relOwns)
	}
	if nspOwns > 0 {
		add("app role %q owns %d schema(s)", appRole, nspOwns)
	}

	rows, err := conn.Query(ctx, `SELECT c.oid::regclass::text, c.relrowsecurity, c.relforcerowsecurity,
			(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid)
		FROM pg_class c
		JOIN pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
		WHERE c.relkind IN ('r', 'p')
		  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
		  AND n.nspname NOT LIKE 'pg\_%'
		ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("pgtenant: verify isolation: %w", err)
	}
	type table struct {
		name            string
		enabled, forced bool
		policies        int
	}
	tables, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (table, error) {
		var t table
		err := row.Scan(&t.name, &t.enabled, &t.forced, &t.policies)
		return t, err
	})
	if err != nil {
		return fmt.Errorf("pgtenant: verify isolation: %w", err)
	}
	for _, t := range tables {
		if !t.enabled {
			add("tenant table %s: ROW LEVEL SECURITY not enabled", t.name)
		}
		if !t.forced {
			add("tenant table %s: ROW LEVEL SECURITY not forced", t.name)
		}
		if t.policies == 0 {
			add("tenant table %s: no policy", t.name)
		}
	}
	return errors.Join(errs...)
}
