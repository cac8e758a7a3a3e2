package pgtenant

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrInvalidName means a role or database name is not a plain lowercase identifier.
var ErrInvalidName = errors.New("pgtenant: invalid role or database name")

// namePattern restricts role and database names to identifiers that need no quoting, so they
// read the same in SQL, URLs and logs.
var namePattern = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

func validName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("%w: %q (want [a-z_][a-z0-9_]*, at most 63 bytes)", ErrInvalidName, name)
	}
	return nil
}

// Roles names a service's two database roles. Conventionally Owner is "<svc>_owner" and App is
// "<svc>_app".
type Roles struct {
	// Owner owns the schema and runs migrations. It is not a superuser and cannot bypass RLS.
	Owner string
	// App is what the service connects as: it owns nothing, inherits nothing and is subject to
	// every policy. Migrate grants it DML on the owner's tables.
	App string
	// Password is set on both roles; empty sets none (password logins then fail; trust or
	// certificate authentication still work).
	Password string
}

// EnsureRoles creates the owner and app roles if missing and (re)asserts their attributes and
// password when they exist, connecting with a superuser URL (only superusers may set the
// BYPASSRLS and SUPERUSER attributes, even to NO). It also revokes
// every role membership the app role has, since NOINHERIT does not stop `SET ROLE` into a role
// it is a member of. Safe to run concurrently with itself.
func EnsureRoles(ctx context.Context, superuserURL string, r Roles) error {
	if err := validName(r.Owner); err != nil {
		return err
	}
	if err := validName(r.App); err != nil {
		return err
	}
	if r.Owner == r.App {
		return fmt.Errorf("%w: owner and app roles must differ (%q)", ErrInvalidName, r.Owner)
	}
	if strings.ContainsRune(r.Password, 0) {
		return errors.New("pgtenant: password contains a NUL byte")
	}
	conn, err := pgx.Connect(ctx, superuserURL)
	if err != nil {
		return fmt.Errorf("pgtenant: ensure roles: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Role DDL is not safe to race: concurrent ALTER ROLEs fail with "tuple concurrently
	// updated". An advisory lock serializes callers on the same database; callers on other
	// databases of the cluster can still collide, so a collision is retried.
	for attempt := 1; ; attempt++ {
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return ensureRoles(ctx, tx, r) })
		var pgErr *pgconn.PgError
		if attempt < 3 && errors.As(err, &pgErr) && (pgErr.Code == "42710" || pgErr.Code == "23505" || pgErr.Code == "XX000") {
			continue
		}
		return err
	}
}

// rolesLockKey is the advisory lock key EnsureRoles holds ("pgtenant" in ASCII).
const rolesLockKey = 0x7067_7465_6e61_6e74

func ensureRoles(ctx context.Context, tx pgx.Tx, r Roles) error {
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock($1)", int64(rolesLockKey)); err != nil {
		return fmt.Errorf("pgtenant: ensure roles: %w", err)
	}
	password := "NULL"
	if r.Password != "" {
		password = quoteLiteral(r.Password)
	}
	const common = "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION"
	for _, role := range []struct {
		name, attrs string
	}{
		{r.Owner, common + " INHERIT"},
		// NOINHERIT: even if someone grants the app role membership later, it gains nothing
		// without an explicit SET ROLE.
		{r.App, common + " NOINHERIT"},
	} {
		ident := pgx.Identifier{role.name}.Sanitize()
		var exists bool
		if err := tx.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", role.name).Scan(&exists); err != nil {
			return fmt.Errorf("pgtenant: look up role %s: %w", role.name, err)
		}
		verb := "ALTER"
		if !exists {
			verb = "CREATE"
		}
		// ALTER for an existing role: the attributes are asserted, not assumed.
		if _, err := tx.Exec(ctx, verb+" ROLE "+ident+" WITH "+role.attrs+" PASSWORD "+password); err != nil {
			return fmt.Errorf("pgtenant: %s role %s: %w", strings.ToLower(verb), role.name, err)
		}
	}

	rows, err := tx.Query(ctx, `SELECT g.rolname FROM pg_auth_members m
		JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
		WHERE u.rolname = $1`, r.App)
	if err != nil {
		return fmt.Errorf("pgtenant: list memberships of %s: %w", r.App, err)
	}
	groups, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("pgtenant: list memberships of %s: %w", r.App, err)
	}
	for _, g := range groups {
		if _, err := tx.Exec(ctx, "REVOKE "+pgx.Identifier{g}.Sanitize()+" FROM "+pgx.Identifier{r.App}.Sanitize()); err != nil {
			return fmt.Errorf("pgtenant: revoke %s from %s: %w", g, r.App, err)
		}
	}
	return nil
}

// CreateDatabase creates database name owned by owner unless it exists, connecting with a
// superuser URL. The owner then owns the public schema (PostgreSQL 15+) and can migrate it.
func CreateDatabase(ctx context.Context, superURL, name, owner string) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := validName(owner); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, superURL)
	if err != nil {
		return fmt.Errorf("pgtenant: create database: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" OWNER "+pgx.Identifier{owner}.Sanitize())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P04" || pgErr.Code == "23505") { // duplicate_database
		return nil
	}
	if err != nil {
		return fmt.Errorf("pgtenant: create database %s: %w", name, err)
	}
	return nil
}

// quoteLiteral quotes s as an SQL string literal for statements that take no parameters
// (ALTER ROLE … PASSWORD). With standard_conforming_strings on (the default since 9.1, and
// required by pgx) backslashes are literal, so doubling quotes is the whole job.
func quoteLiteral(s string) string {
	return "'" + strings.ReplaceAll(s, "'", "''") + "'"
}
