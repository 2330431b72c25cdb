package tokenhub

import (
	"slices"
	"time"
)

// Workspace holds connections and the apps that may read them.
type Workspace struct {
	ID        int64
	Name      string
	CreatedAt time.Time
}

// App is a client of tokenhub inside one workspace. Its key is shown once at
// creation; only KeyHash, the SHA-256 of the key, is stored.
type App struct {
	ID          int64
	Workspace   string
	Name        string
	KeyHash     []byte
	Connections []string // when non-empty, the only connections the app may read
	CreatedAt   time.Time
}

// CanRead reports whether the app may read the named connection of its workspace.
func (a *App) CanRead(conn string) bool {
	return len(a.Connections) == 0 || slices.Contains(a.Connections, conn)
}
