# What the default-model recipes (train_default.sh, train_default_bert.sh) share; sourced.
#
# recipe_args NAME QUICK_STEPS QUICK_WARMUP "$@": the options every recipe takes, over the
#   defaults the script set in steps, warmup, ranks, out and force: --quick (QUICK_STEPS steps,
#   QUICK_WARMUP warm-up), --steps N, --ranks P, --out DIR, --force.
# recipe_begin NAME: needs the built binary ($bin); $work = $out.work; --force starts over;
#   exits 0 when $out is already built (and no run is half-way); creates $work.
# recipe_publish NAME: the finished checkpoint folder $work/ckpt becomes $out.
recipe_args() {
  local name=$1 quick_steps=$2 quick_warmup=$3
  shift 3
  while [ $# -gt 0 ]; do
    case $1 in
      --quick) steps=$quick_steps warmup=$quick_warmup ;;
      --steps) steps=$2; shift ;;
      --ranks) ranks=$2; shift ;;
      --out) out=$2; shift ;;
      --force) force=1 ;;
      *) echo "$name: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
  done
}

recipe_begin() {
  bin=build/switchyard
  [ -x "$bin" ] || { echo "$1: build first (bash launch/setup.sh)" >&2; exit 2; }
  work=$out.work
  if [ "$force" = 1 ]; then rm -rf "$out" "$work"; fi
  if [ -d "$out" ] && [ ! -d "$work" ]; then
    echo "$1: $out exists (pass --force to rebuild it)"
    exit 0
  fi
  mkdir -p "$work"
}

recipe_publish() {
  rm -rf "$out"
  mv "$work/ckpt" "$out"
  rm -rf "$work"
  echo "$1: wrote $out ($(du -sh "$out" | cut -f1)); try:"
}
