package memory

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"sync"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// Store keeps reservations in an alloc.Index under a RWMutex.
type Store struct {
	mu      sync.RWMutex
	idx     *alloc.Index
	version uint64
}

var _ alloc.Store = (*Store)(nil)

// New returns an empty Store.
func New() *Store { return &Store{idx: alloc.NewIndex()} }

// Len is the number of reservations.
func (s *Store) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.idx.Len()
}

// Get implements alloc.Store.
func (s *Store) Get(_ context.Context, ip netip.Addr) (alloc.Reservation, bool, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.idx.Get(ip)
	return r, ok, nil
}

// ByOwner implements alloc.Store.
func (s *Store) ByOwner(_ context.Context, key string) ([]alloc.Reservation, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.idx.ByOwner(key), nil
}

// List implements alloc.Store.
func (s *Store) List(_ context.Context) ([]alloc.Reservation, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.idx.List(), nil
}

// ListShared implements alloc.SharedLister. The records are never
// modified: every write puts a new one.
func (s *Store) ListShared(_ context.Context) ([]*alloc.Reservation, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.idx.ListShared(), nil
}

// Taken implements alloc.Store.
func (s *Store) Taken(_ context.Context, fn func(*alloc.IPSet)) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	fn(s.idx.Taken())
	return nil
}

func (s *Store) nextVersion() string {
	s.version++
	return strconv.FormatUint(s.version, 10)
}

// Create implements alloc.Store.
func (s *Store) Create(_ context.Context, r alloc.Reservation) (alloc.Reservation, error) {
	if !r.IP.IsValid() {
		return alloc.Reservation{}, fmt.Errorf("memory: create: invalid IP")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.idx.Get(r.IP); ok {
		return alloc.Reservation{}, fmt.Errorf("%s (held by %s): %w", r.IP, cur.Owner, alloc.ErrExists)
	}
	r.Version = s.nextVersion()
	s.idx.Put(r)
	return r, nil
}

// Update implements alloc.Store.
func (s *Store) Update(_ context.Context, r alloc.Reservation) (alloc.Reservation, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.idx.Get(r.IP)
	if !ok {
		return alloc.Reservation{}, fmt.Errorf("%s: %w", r.IP, alloc.ErrNotFound)
	}
	if cur.Version != r.Version {
		return alloc.Reservation{}, fmt.Errorf("%s: version %s, have %s: %w", r.IP, r.Version, cur.Version, alloc.ErrConflict)
	}
	r.Version = s.nextVersion()
	s.idx.Put(r)
	return r, nil
}

// Delete implements alloc.Store.
func (s *Store) Delete(_ context.Context, r alloc.Reservation) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.idx.Get(r.IP)
	if !ok {
		return fmt.Errorf("%s: %w", r.IP, alloc.ErrNotFound)
	}
	if cur.Version != r.Version {
		return fmt.Errorf("%s: version %s, have %s: %w", r.IP, r.Version, cur.Version, alloc.ErrConflict)
	}
	s.idx.Delete(r.IP)
	return nil
}
