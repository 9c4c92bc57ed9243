// Writes gpt2_golden.json: GPT-2 token ids from the gpt-3-encoder package's own encode(), the
// reference for runtime/data/bpe_tokenizer (tests/runtime/tokenizer_test.cc), so the test
// needs no node. Run from the repository root after launch/setup.sh:
//   node tests/runtime/testdata/make_gpt2_golden.js > tests/runtime/testdata/gpt2_golden.json
const fs = require('fs');
const path = require('path');
const root = path.resolve(__dirname, '../../..');
const encoderJs = path.join(root, 'data/third_party/gpt-3-encoder/package/Encoder.js');
const {encode} = require(encoderJs);

// For whole corpora: the same Encoder.js with its quadratic `bpe_tokens.concat(...)` turned
// into pushes (identical ids; minutes -> seconds). Only a count and a hash are stored.
function loadFastEncode() {
  const Module = require('module');
  const before = 'bpe_tokens = bpe_tokens.concat(new_tokens)';
  const src = fs.readFileSync(encoderJs, 'utf8');
  if (!src.includes(before)) throw new Error('Encoder.js changed: ' + before + ' not found');
  const m = new Module(encoderJs);
  m.filename = encoderJs;
  m.paths = Module._nodeModulePaths(path.dirname(encoderJs));
  m._compile(src.replace(before, 'for (const t of new_tokens) bpe_tokens.push(t)'), encoderJs);
  return m.exports.encode;
}
// FNV-1a over 32-bit ids (not bytes): h = (h ^ id) * 16777619 mod 2^32.
function hashIds(ids) {
  let h = 2166136261;
  for (const id of ids) h = Math.imul(h ^ id, 16777619) >>> 0;
  return h;
}

const texts = {
  punctuation: 'Hello, world! (Really?) "Quoted" -- a;b:c... #hash @at $5 & 100% <|endoftext|>',
  contractions: "I'm sure it's fine; they'll say we've done what you'd and I'd, aren't we? " +
      "IT'S LOUD. rock'n'roll ''quotes'' 'tis '' ' s",
  digits: 'Call 555-1234 or 1,234,567.89 in 2024; pi=3.14159 x2 2x 007 ²³ ١٢٣ Ⅻ',
  spaces: 'a  b   c    d\t\te \u00a0f  ',
  newlines: 'line one\nline two\n\n\nline five\r\n  indented\n\t\ttabbed\n \n',
  non_ascii: 'naïve café Zoë façade São Paulo Ελληνικά русский 日本語 🐋 e\u0301 क्षत्रिय',
  edge: ' leading space',
  empty: '',
  long_run: '='.repeat(300) + ' ' + 'ab'.repeat(200) + ' ' + ' '.repeat(50) + 'x',
};
const excerpt = fs.readFileSync(path.join(root, 'data/moby_dick_excerpt.txt'));
let cut = excerpt.lastIndexOf(0x0a, 4096) + 1;  // first ~4 KB, at a line boundary
const cases = Object.entries(texts).map(([name, text]) => ({name, text, ids: encode(text)}));
cases.push({
  name: 'moby_dick_head',
  source: 'data/moby_dick_excerpt.txt',
  bytes: cut,
  ids: encode(excerpt.subarray(0, cut).toString('utf8')),
});
const fastEncode = loadFastEncode();
const third = 'data/third_party';
const corpora = {
  moby_dick_full: fs.readFileSync(path.join(root, third, 'moby-dick/package/data/data.txt')),
  sotu_full: Buffer.concat(fs.readdirSync(path.join(root, third, 'sotu/package/data'))
                               .filter(f => f.endsWith('.txt'))
                               .sort()
                               .map(f => fs.readFileSync(path.join(root, third, 'sotu/package/data', f)))),
};
for (const [name, bytes] of Object.entries(corpora)) {
  const ids = fastEncode(bytes.toString('utf8'));
  cases.push({name, corpus: name.replace('_full', ''), bytes: bytes.length, num_ids: ids.length,
              fnv1a32_ids: hashIds(ids)});
}
const lines = cases.map(c => '  ' + JSON.stringify(c));
process.stdout.write('{"generator": "tests/runtime/testdata/make_gpt2_golden.js", ' +
                     '"package": "gpt-3-encoder@1.1.4", "cases": [\n' + lines.join(',\n') +
                     '\n]}\n');
