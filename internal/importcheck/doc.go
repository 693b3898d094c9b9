// Package importcheck holds only a test: it pins what some packages must
// not link, so that an import that pulls a database driver, a web
// framework or a NATS client into a package that does not need it fails
// the build's tests, naming the chain of imports that brought it in.
//
//   - domain links no pgx, echo, NATS, SQLite or goose: it is pure Go.
//   - The ports (eventstore, projections, idempotency, leader, shred,
//     audit) link no database driver: their adapters are sub-packages.
//   - httpapi, commands, relay and tail link no database driver: they
//     reach the stores through ports, and a subscriber needs only the
//     event codec.
package importcheck
