package stack

// Internals for the tests of package stack_test.
var (
	ConnectAdmin = connectAdmin
	Alive        = alive
)

// SetDebianPGBin points the Debian fallback for the PostgreSQL binaries at
// dir and returns a func that restores it.
func SetDebianPGBin(dir string) (restore func()) {
	old := debianPGBin
	debianPGBin = dir
	return func() { debianPGBin = old }
}

// PgBouncerINI is the PgBouncer configuration the stack writes.
func (s *Stack) PgBouncerINI() string { return s.pgbouncerINI() }
