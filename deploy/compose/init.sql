-- Per-service databases and role pairs, as `make run` creates them: the owner migrates, the app
-- role owns nothing and lacks BYPASSRLS, so forced row-level security binds it.
CREATE ROLE identity_owner LOGIN NOSUPERUSER NOBYPASSRLS PASSWORD 'identity-owner';
CREATE ROLE identity_app LOGIN NOSUPERUSER NOBYPASSRLS NOINHERIT PASSWORD 'identity-app';
CREATE DATABASE identity OWNER identity_owner;
