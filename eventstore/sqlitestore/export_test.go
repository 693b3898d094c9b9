package sqlitestore

// ReadAccountSQL is the statement of ReadAccount, for the test of its plan.
const ReadAccountSQL = readAccountSQL
