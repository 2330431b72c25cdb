package sqlite

import "context"

// Pragma returns the value of a PRAGMA on the store's write connection, so
// that tests can check the durability settings a real write runs under.
func Pragma(s *Store, name string) (string, error) {
	var v string
	err := s.db.QueryRowContext(context.Background(), "PRAGMA "+name).Scan(&v)
	return v, err
}
