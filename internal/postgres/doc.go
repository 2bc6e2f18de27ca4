// Package postgres is Parley's PostgreSQL storage: the embedded schema
// migrations and the store that runs the application's SQL. Queries live
// beside the method that runs them and are proven by EXPLAIN tests.
package postgres
