// Writes the body of runtime/data/unicode_classes.cc: the code-point ranges of JavaScript's
// /\p{L}/u, /\p{N}/u and /\s/u, exactly as the node that runs it sees them.
//   node runtime/data/gen_unicode_classes.js > /tmp/tables.inc
function ranges(re) {
  const r = [];
  let s = -1;
  for (let c = 0; c <= 0x110000; c++) {
    const m = c <= 0x10FFFF && re.test(String.fromCodePoint(c));
    if (m && s < 0) s = c;
    if (!m && s >= 0) { r.push([s, c - 1]); s = -1; }
  }
  return r;
}
function emit(name, r) {
  const items = r.map(([a, b]) => `{0x${a.toString(16).toUpperCase()}, 0x${b.toString(16).toUpperCase()}}`);
  let out = `const Range ${name}[] = {\n`, line = '   ';
  for (const it of items) {
    if (line.length + it.length + 2 > 98) { out += line + '\n'; line = '   '; }
    line += ' ' + it + ',';
  }
  out += line + '\n};\n';
  return out;
}
console.log(`// Unicode ${process.versions.unicode} (node ${process.version}, ICU ${process.versions.icu}).`);
console.log(emit('kLetter', ranges(/^\p{L}$/u)));
console.log(emit('kNumber', ranges(/^\p{N}$/u)));
console.log(emit('kSpace', ranges(/^\s$/u)));
