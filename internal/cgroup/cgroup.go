// Package cgroup puts a build (or a buildroot preparation) in a control
// group of its own, with limits on memory, the number of processes and a
// CPU weight, and kills everything in it at the end, including processes
// that left the caller's process group or were reparented to PID 1.
//
// It uses the unified cgroup v2 hierarchy when the host has one with the
// memory and pids controllers, and otherwise the v1 memory, pids and cpu
// hierarchies below /sys/fs/cgroup (a v1 host may also mount an empty v2
// tree at /sys/fs/cgroup/unified; that one is not used). Groups are made
// below a parent named Parent in each hierarchy.
//
// Creating a group needs root.
package cgroup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Limits of one group. Zero means no limit (or the default weight).
type Limits struct {
	// Memory is the most RAM (and, where the host has swap, RAM plus swap)
	// the group may use, in bytes; beyond it the kernel's OOM killer ends
	// a process of the group.
	Memory int64 `yaml:"memory"`
	// Pids is the most processes and threads the group may have at once;
	// fork fails with EAGAIN beyond it.
	Pids int64 `yaml:"pids"`
	// CPUWeight is the group's share of the CPU under contention, 1 to
	// 10000 with 100 as the default (cgroup v2's cpu.weight; on v1 it is
	// turned into cpu.shares).
	CPUWeight int64 `yaml:"cpu_weight"`
}

// Validate reports limits the kernel would refuse.
func (l Limits) Validate() error {
	switch {
	case l.Memory < 0:
		return fmt.Errorf("memory limit %d is negative", l.Memory)
	case l.Memory > 0 && l.Memory < 16<<20:
		return fmt.Errorf("memory limit %d bytes is below 16 MiB", l.Memory)
	case l.Pids < 0:
		return fmt.Errorf("pids limit %d is negative", l.Pids)
	case l.CPUWeight < 0 || l.CPUWeight > 10000:
		return fmt.Errorf("cpu weight %d is not between 1 and 10000", l.CPUWeight)
	}
	return nil
}

// Parent is the group below which every group of this package is made.
const Parent = "cloud-builder"

// Root is where the cgroup file systems are mounted.
var Root = "/sys/fs/cgroup"

// v1Controllers are the v1 hierarchies a group joins; memory and pids are
// required, cpu is used when mounted.
var v1Controllers = []string{"memory", "pids", "cpu"}

// Group is one control group (a directory in each hierarchy used).
type Group struct {
	name string
	// dirs are the group's directories: one on v2, one per v1 hierarchy
	// (memory first).
	dirs []string
	v2   bool
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,200}$`)

// ErrUnavailable is returned by New when the host has neither a usable
// cgroup v2 hierarchy nor the v1 memory and pids hierarchies.
var ErrUnavailable = errors.New("no usable cgroup hierarchy (need cgroup v2 with memory and pids, or the v1 memory and pids hierarchies)")

// Version reports which cgroup version New uses on this host: 2, 1, or 0
// when neither is usable.
func Version() int {
	if v2Usable() {
		return 2
	}
	for _, c := range []string{"memory", "pids"} {
		if _, err := os.Stat(filepath.Join(Root, c, "cgroup.procs")); err != nil {
			return 0
		}
	}
	return 1
}

func v2Usable() bool {
	data, err := os.ReadFile(filepath.Join(Root, "cgroup.controllers"))
	if err != nil {
		return false
	}
	have := strings.Fields(string(data))
	return contains(have, "memory") && contains(have, "pids")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// New creates the group Parent/name with the limits. The name must be
// unique among the running groups; a stale group of that name (left by a
// crashed runner) is emptied and reused.
func New(name string, l Limits) (*Group, error) {
	if !validName.MatchString(name) {
		return nil, fmt.Errorf("create cgroup: invalid name %q", name)
	}
	if err := l.Validate(); err != nil {
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	g := &Group{name: name}
	switch Version() {
	case 2:
		g.v2 = true
		parent := filepath.Join(Root, Parent)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return nil, fmt.Errorf("create cgroup %s: %w", name, err)
		}
		// Controllers must be enabled on the way down before a child can
		// use them; the root and our parent hold no processes of ours.
		for _, d := range []string{Root, parent} {
			if err := enable(d, "+memory +pids +cpu"); err != nil {
				if err := enable(d, "+memory +pids"); err != nil {
					return nil, fmt.Errorf("create cgroup %s: enable controllers in %s: %w", name, d, err)
				}
			}
		}
		g.dirs = []string{filepath.Join(parent, name)}
	case 1:
		for _, c := range v1Controllers {
			base := filepath.Join(Root, c)
			if _, err := os.Stat(filepath.Join(base, "cgroup.procs")); err != nil {
				continue // cpu is optional
			}
			g.dirs = append(g.dirs, filepath.Join(base, Parent, name))
		}
	default:
		return nil, ErrUnavailable
	}
	for _, d := range g.dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			g.remove()
			return nil, fmt.Errorf("create cgroup %s: %w", name, err)
		}
	}
	// A group left by a crashed runner may still hold processes.
	if err := g.Kill(context.Background()); err != nil {
		g.remove()
		return nil, fmt.Errorf("create cgroup %s: empty stale group: %w", name, err)
	}
	if err := g.set(l); err != nil {
		g.remove()
		return nil, fmt.Errorf("create cgroup %s: %w", name, err)
	}
	return g, nil
}

func enable(dir, controllers string) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(controllers), 0)
}

func (g *Group) set(l Limits) error {
	write := func(dir, file, value string, optional bool) error {
		err := os.WriteFile(filepath.Join(dir, file), []byte(value), 0)
		if err != nil && optional && errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("set %s to %s: %w", file, value, err)
		}
		return nil
	}
	if g.v2 {
		d := g.dirs[0]
		if l.Memory > 0 {
			if err := write(d, "memory.max", strconv.FormatInt(l.Memory, 10), false); err != nil {
				return err
			}
			// Without swap the limit is a limit; hosts with swap must not
			// let a build page out the rest of the machine instead.
			if err := write(d, "memory.swap.max", "0", true); err != nil {
				return err
			}
		}
		if l.Pids > 0 {
			if err := write(d, "pids.max", strconv.FormatInt(l.Pids, 10), false); err != nil {
				return err
			}
		}
		if l.CPUWeight > 0 {
			if err := write(d, "cpu.weight", strconv.FormatInt(l.CPUWeight, 10), true); err != nil {
				return err
			}
		}
		return nil
	}
	for _, d := range g.dirs {
		switch filepath.Base(filepath.Dir(filepath.Dir(d))) {
		case "memory":
			if l.Memory > 0 {
				if err := write(d, "memory.limit_in_bytes", strconv.FormatInt(l.Memory, 10), false); err != nil {
					return err
				}
				// memsw exists only with swap accounting; it must not be
				// below the RAM limit, so it is set after it.
				if err := write(d, "memory.memsw.limit_in_bytes", strconv.FormatInt(l.Memory, 10), true); err != nil {
					return err
				}
			}
		case "pids":
			if l.Pids > 0 {
				if err := write(d, "pids.max", strconv.FormatInt(l.Pids, 10), false); err != nil {
					return err
				}
			}
		case "cpu":
			if l.CPUWeight > 0 {
				// v2's weight 100 is v1's 1024 shares.
				shares := l.CPUWeight * 1024 / 100
				if shares < 2 {
					shares = 2
				}
				if err := write(d, "cpu.shares", strconv.FormatInt(shares, 10), true); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Name is the group's name below Parent.
func (g *Group) Name() string { return g.name }

// Dirs are the group's directories, one per hierarchy used.
func (g *Group) Dirs() []string { return append([]string(nil), g.dirs...) }

// Add moves process pid into the group; its future children are born in
// it. Add it before it starts anything, so nothing escapes the limits.
func (g *Group) Add(pid int) error {
	for _, d := range g.dirs {
		if err := os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("add process %d to cgroup %s: %w", pid, g.name, err)
		}
	}
	return nil
}

// Pids lists the processes in the group.
func (g *Group) Pids() ([]int, error) {
	seen := map[int]bool{}
	var out []int
	for _, d := range g.dirs {
		data, err := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list cgroup %s: %w", g.name, err)
		}
		for _, f := range strings.Fields(string(data)) {
			pid, err := strconv.Atoi(f)
			if err == nil && !seen[pid] {
				seen[pid] = true
				out = append(out, pid)
			}
		}
	}
	return out, nil
}

// Kill sends SIGKILL to every process of the group until it is empty.
// On v2 cgroup.kill does it in one atomic step; on v1 processes are
// killed one by one, over and over, so a process forked meanwhile is
// caught in the next round (the pids limit bounds how many can appear).
func (g *Group) Kill(ctx context.Context) error {
	if g.v2 {
		// Kernels before 5.14 lack cgroup.kill; the loop below works
		// everywhere and also confirms the group is empty.
		_ = os.WriteFile(filepath.Join(g.dirs[0], "cgroup.kill"), []byte("1"), 0)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for delay := time.Millisecond; ; delay = min(2*delay, 100*time.Millisecond) {
		pids, err := g.Pids()
		if err != nil {
			return err
		}
		if len(pids) == 0 {
			return nil
		}
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kill cgroup %s: %d processes left: %w", g.name, len(pids), context.Cause(ctx))
		case <-time.After(delay):
		}
	}
}

// OOMKills is how many processes of the group the kernel's OOM killer
// ended because of the memory limit.
func (g *Group) OOMKills() int64 {
	file, key := "memory.events", "oom_kill"
	if !g.v2 {
		file, key = "memory.oom_control", "oom_kill"
	}
	for _, d := range g.dirs {
		data, err := os.ReadFile(filepath.Join(d, file))
		if err != nil {
			continue
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			f := strings.Fields(string(line))
			if len(f) == 2 && f[0] == key {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				return n
			}
		}
	}
	return 0
}

// Close kills what is left in the group and removes it.
func (g *Group) Close() error {
	err := g.Kill(context.Background())
	return errors.Join(err, g.remove())
}

// remove deletes the group's directories; a group is removable once its
// last process is reaped, which can lag the SIGKILL a little.
func (g *Group) remove() error {
	var errs []error
	for _, d := range g.dirs {
		var err error
		for i := 0; i < 50; i++ {
			err = syscall.Rmdir(d)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				err = nil
				break
			}
			if !errors.Is(err, syscall.EBUSY) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// Owned returns the groups a process made: the sandbox and buildroot
// packages name their groups <kind>-<pid of the maker>-<sequence>. The
// scheduler uses it to kill everything of a job it killed (the job itself
// cannot clean up after SIGKILL).
func Owned(pid int) ([]*Group, error) {
	re := regexp.MustCompile(`^[a-z]+-` + strconv.Itoa(pid) + `-[0-9]+$`)
	var bases []string
	v2 := false
	switch Version() {
	case 2:
		v2 = true
		bases = []string{filepath.Join(Root, Parent)}
	case 1:
		for _, c := range v1Controllers {
			bases = append(bases, filepath.Join(Root, c, Parent))
		}
	default:
		return nil, nil
	}
	byName := map[string]*Group{}
	var out []*Group
	for _, b := range bases {
		ents, err := os.ReadDir(b)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list cgroups: %w", err)
		}
		for _, e := range ents {
			if !e.IsDir() || !re.MatchString(e.Name()) {
				continue
			}
			g := byName[e.Name()]
			if g == nil {
				g = &Group{name: e.Name(), v2: v2}
				byName[e.Name()] = g
				out = append(out, g)
			}
			g.dirs = append(g.dirs, filepath.Join(b, e.Name()))
		}
	}
	return out, nil
}

// CloseOwned kills and removes every group process pid made.
func CloseOwned(pid int) error {
	groups, err := Owned(pid)
	if err != nil {
		return err
	}
	var errs []error
	for _, g := range groups {
		errs = append(errs, g.Close())
	}
	return errors.Join(errs...)
}
