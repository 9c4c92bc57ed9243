# Helpers shared by the end-to-end scripts (sourced; they set $work and fail=0 first).
# expect CODE NAME CMD...: runs CMD with its output in $work/NAME.log; a different exit code
# prints the log's tail and sets fail=1.
expect() {
  local want=$1 name=$2
  shift 2
  "$@" >"$work/$name.log" 2>&1
  local got=$?
  if [ "$got" != "$want" ]; then
    echo "FAIL $name: exit $got, expected $want"
    tail -n 20 "$work/$name.log"
    fail=1
  else
    echo "ok   $name (exit $got)"
  fi
}
