-- The initial schema. Times are INTEGER nanoseconds since the Unix epoch in
-- UTC; NULL is the zero time. Sealed columns hold internal/seal values.

CREATE TABLE workspaces (
	id         INTEGER PRIMARY KEY AUTOINCREMENT,
	name       TEXT NOT NULL UNIQUE,
	created_at INTEGER NOT NULL
);

-- Providers hold no secrets; def is the Provider as JSON.
CREATE TABLE providers (
	name       TEXT PRIMARY KEY,
	def        TEXT NOT NULL,
	updated_at INTEGER NOT NULL
);

CREATE TABLE connections (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	workspace_id INTEGER NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
	name         TEXT NOT NULL,

	config     BLOB NOT NULL, -- sealed ConnectionConfig JSON
	generation INTEGER NOT NULL,
	token      BLOB,          -- sealed token JSON; NULL when there is none

	-- Status, in plain columns: none of it is secret, and listing stays cheap.
	token_expires_at INTEGER,
	state            TEXT NOT NULL,
	last_error       TEXT,    -- ErrorInfo JSON
	last_refresh_at  INTEGER,
	refresh_count    INTEGER NOT NULL DEFAULT 0,
	failures         INTEGER NOT NULL DEFAULT 0,
	next_refresh_at  INTEGER,

	lease_owner TEXT NOT NULL DEFAULT '',
	lease_since INTEGER,
	lease_until INTEGER,

	version    INTEGER NOT NULL,
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL,

	UNIQUE (workspace_id, name)
);

CREATE TABLE events (
	id            INTEGER PRIMARY KEY AUTOINCREMENT,
	connection_id INTEGER NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
	at            INTEGER NOT NULL,
	type          TEXT NOT NULL,
	message       TEXT NOT NULL
);
CREATE INDEX events_connection ON events (connection_id, id);

-- Apps: only the SHA-256 of the key is stored.
CREATE TABLE apps (
	id           INTEGER PRIMARY KEY AUTOINCREMENT,
	workspace_id INTEGER NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
	name         TEXT NOT NULL,
	key_hash     BLOB NOT NULL UNIQUE,
	connections  TEXT NOT NULL, -- JSON array of connection names; [] for all
	created_at   INTEGER NOT NULL,
	UNIQUE (workspace_id, name)
);
