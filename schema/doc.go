// Package schema holds attune's database schema: the SQL migrations embedded
// in the binary, River's own migrations (applied into the same schema,
// "attune"), and the helpers that open a database, creating it when missing.
//
// Everything attune stores lives in one PostgreSQL schema so that
// DROP SCHEMA attune CASCADE removes all of it.
package schema
