#!/usr/bin/env bash
# Runs one native Go fuzz target: scripts/fuzz-one.sh GO PKG NAME FUZZTIME.
#
# Go 1.26's fuzzing coordinator can report a bare "context deadline
# exceeded" failure when -fuzztime ends while a worker is still busy on a
# loaded machine (golang/go#75804, fixed in Go 1.27). Such a run found
# nothing: it wrote no failing input and printed no panic or test error. It
# is run once more; any other failure fails at once.
set -euo pipefail
go=$1 pkg=$2 name=$3 fuzztime=$4
for attempt in 1 2; do
	log=$(mktemp)
	if "$go" test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$pkg" 2>&1 | tee "$log"; then
		rm -f "$log"
		exit 0
	fi
	if [ "$attempt" = 1 ] && grep -q 'context deadline exceeded' "$log" &&
		! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$log"; then
		echo "fuzz $pkg $name: the Go 1.26 fuzztime deadline race (golang/go#75804), no failing input; running it again"
		rm -f "$log"
		continue
	fi
	rm -f "$log"
	exit 1
done
exit 1
