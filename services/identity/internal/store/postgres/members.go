package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bulkhead/bulkhead/pkg/authz"
	"github.com/bulkhead/bulkhead/pkg/pgtenant"
	"github.com/bulkhead/bulkhead/services/identity/internal/store"
)

const memberCols = `u.tenant_id, u.id, u.email, u.display_name, m.role, m.created_at`

// scanMember reads memberCols. role and created_at come from an outer join in
// getUserAsMemberSQL, hence nullable.
func scanMember(row pgx.Row) (store.Member, error) {
	var (
		m       store.Member
		role    *string
		created *time.Time
	)
	if err := row.Scan(&m.TenantID, &m.UserID, &m.Email, &m.DisplayName, &role, &created); err != nil {
		return m, err
	}
	if role != nil {
		m.Role = authz.Role(*role)
	}
	if created != nil {
		m.CreatedAt = *created
	}
	return m, nil
}

const (
	// upsertUserSQL creates the user, or finds the one with the same address in this tenant
	// (addresses compare case-insensitively), refreshing its display name when one is given.
	upsertUserSQL = `INSERT INTO users (tenant_id, id, email, display_name) VALUES ($1, $2, $3, $4)
ON CONFLICT (tenant_id, lower(email)) DO UPDATE
	SET display_name = CASE WHEN excluded.display_name <> '' THEN excluded.display_name ELSE users.display_name END
RETURNING tenant_id, id, email, display_name`

	insertMembershipSQL = `INSERT INTO memberships (tenant_id, user_id, role) VALUES ($1, $2, $3)
ON CONFLICT (tenant_id, user_id) DO NOTHING
RETURNING role, created_at`

	getMemberSQL = `SELECT ` + memberCols + ` FROM memberships m
JOIN users u ON u.tenant_id = m.tenant_id AND u.id = m.user_id
WHERE m.tenant_id = $1 AND m.user_id = $2`

	// getUserAsMemberSQL finds a user whether or not it is still a member (for replays).
	getUserAsMemberSQL = `SELECT ` + memberCols + ` FROM users u
LEFT JOIN memberships m ON m.tenant_id = u.tenant_id AND m.user_id = u.id
WHERE u.tenant_id = $1 AND u.id = $2`

	lockMemberSQL = getMemberSQL + ` FOR UPDATE OF m`

	listMembersSQL = `SELECT ` + memberCols + ` FROM memberships m
JOIN users u ON u.tenant_id = m.tenant_id AND u.id = m.user_id
WHERE m.tenant_id = $1 AND ($2::timestamptz IS NULL OR (m.created_at, m.user_id) > ($2, $3::uuid))
ORDER BY m.created_at, m.user_id LIMIT $4`

	countOwnersSQL = `SELECT count(*) FROM memberships WHERE tenant_id = $1 AND role = 'owner'`

	updateRoleSQL = `UPDATE memberships SET role = $3, updated_at = now()
WHERE tenant_id = $1 AND user_id = $2`

	deleteMembershipSQL = `DELETE FROM memberships WHERE tenant_id = $1 AND user_id = $2`

	revokeUserKeysSQL = `UPDATE api_keys SET revoked_at = now()
WHERE tenant_id = $1 AND user_id = $2 AND revoked_at IS NULL`
)

// insertMember upserts the user and inserts the membership; ErrAlreadyExists when the user is
// already a member.
func insertMember(ctx context.Context, tx pgx.Tx, tenantID string, nm store.NewMember) (*store.Member, error) {
	var m store.Member
	err := tx.QueryRow(ctx, upsertUserSQL, tenantID, nm.UserID, nm.Email, nm.DisplayName).
		Scan(&m.TenantID, &m.UserID, &m.Email, &m.DisplayName)
	if err != nil {
		return nil, fmt.Errorf("upsert user: %w", err)
	}
	err = tx.QueryRow(ctx, insertMembershipSQL, tenantID, m.UserID, string(nm.Role)).Scan(&m.Role, &m.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("%w: member", store.ErrAlreadyExists)
	}
	if err != nil {
		return nil, fmt.Errorf("insert membership: %w", err)
	}
	return &m, nil
}

// AddMember implements store.Members.
func (p *Postgres) AddMember(ctx context.Context, tenantID string, nm store.NewMember) (*store.Member, error) {
	var out *store.Member
	err := p.inTenant(ctx, tenantID, func(tx pgx.Tx) error {
		var err error
		out, err = insertMember(ctx, tx, tenantID, nm)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GetMember implements store.Members in one round trip.
func (p *Postgres) GetMember(ctx context.Context, tenantID, userID string) (*store.Member, error) {
	m, err := pgtenant.QueryOne(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, getMemberSQL,
		[]any{tenantID, userID}, func(row pgx.CollectableRow) (store.Member, error) { return scanMember(row) })
	if err != nil {
		return nil, interpretError(err)
	}
	return &m, nil
}

// ListMembers implements store.Members in one round trip.
func (p *Postgres) ListMembers(ctx context.Context, tenantID string, page store.Page) ([]store.Member, *store.Cursor, error) {
	after, afterID := cursorArgs(page)
	ms, err := pgtenant.Query(ctx, p.db, pgtenant.Scope{TenantID: tenantID}, listMembersSQL,
		[]any{tenantID, after, afterID, limitArg(page)},
		func(row pgx.CollectableRow) (store.Member, error) { return scanMember(row) })
	if err != nil {
		return nil, nil, interpretError(err)
	}
	items, next := paginate(ms, page, func(m store.Member) store.Cursor { return store.Cursor{CreatedAt: m.CreatedAt, ID: m.UserID} })
	return items, next, nil
}

// lockedMember locks the tenant (see lockTenantSQL) and then the member's row, and runs check.
func lockedMember(ctx context.Context, tx pgx.Tx, tenantID, userID string, check store.MemberCheck) (store.Member, error) {
	if _, err := lockTenant(ctx, tx, tenantID); err != nil {
		return store.Member{}, fmt.Errorf("lock tenant: %w", err)
	}
	m, err := scanMember(tx.QueryRow(ctx, lockMemberSQL, tenantID, userID))
	if err != nil {
		return m, fmt.Errorf("read member: %w", err)
	}
	if check != nil {
		if err := check(m); err != nil {
			return m, err
		}
	}
	return m, nil
}

// ensureAnotherOwner returns ErrLastOwner unless the tenant has an owner besides the one
// about to lose the role.
func ensureAnotherOwner(ctx context.Context, tx pgx.Tx, tenantID string) error {
	var owners int
	if err := tx.QueryRow(ctx, countOwnersSQL, tenantID).Scan(&owners); err != nil {
		return fmt.Errorf("count owners: %w", err)
	}
	if owners <= 1 {
		return store.ErrLastOwner
	}
	return nil
}

// UpdateMemberRole implements store.Members.
func (p *Postgres) UpdateMemberRole(ctx context.Context, tenantID, userID string, role authz.Role, check store.MemberCheck) (*store.Member, error) {
	var out store.Member
	err := p.inTenant(ctx, tenantID, func(tx pgx.Tx) error {
		m, err := lockedMember(ctx, tx, tenantID, userID, check)
		if err != nil {
			return err
		}
		if m.Role == role {
			out = m
			return nil
		}
		if m.Role == authz.RoleOwner {
			if err := ensureAnotherOwner(ctx, tx, tenantID); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, updateRoleSQL, tenantID, userID, string(role)); err != nil {
			return fmt.Errorf("update role: %w", err)
		}
		m.Role = role
		out = m
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// RemoveMember implements store.Members.
func (p *Postgres) RemoveMember(ctx context.Context, tenantID, userID string, check store.MemberCheck) error {
	return p.inTenant(ctx, tenantID, func(tx pgx.Tx) error {
		m, err := lockedMember(ctx, tx, tenantID, userID, check)
		if err != nil {
			return err
		}
		if m.Role == authz.RoleOwner {
			if err := ensureAnotherOwner(ctx, tx, tenantID); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, deleteMembershipSQL, tenantID, userID); err != nil {
			return fmt.Errorf("delete membership: %w", err)
		}
		if _, err := tx.Exec(ctx, revokeUserKeysSQL, tenantID, userID); err != nil {
			return fmt.Errorf("revoke member keys: %w", err)
		}
		return insertEvent(ctx, tx, tenantID, store.Event{Type: store.EventMemberRemoved, Payload: map[string]any{
			"tenant_id": tenantID, "user_id": userID,
		}})
	})
}
