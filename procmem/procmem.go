// Package procmem reads the resident memory of processes from /proc, for
// the model cache's measure of what a model holds.
package procmem

import (
	"os"
	"strconv"
	"strings"
)

// Resident is the resident memory in bytes of process pid (0: this
// process), from /proc/<pid>/statm; 0 where it cannot be read.
func Resident(pid int) int64 {
	path := "/proc/self/statm"
	if pid > 0 {
		path = "/proc/" + strconv.Itoa(pid) + "/statm"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) < 2 {
		return 0
	}
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * int64(os.Getpagesize())
}
