//! Bounded mutation fuzzing of the readers users feed ferrocert: ONNX (decode, import and
//! simplify; then one evaluation and one IBP pass over whatever loads), VNN-LIB and `.npy`.
//!
//! Seeds are the repository's models, specs, arrays and operator fixtures, plus every small file
//! of `../shared/benchmarks` when it is present. Each execution applies one to four mutations
//! (byte flips, interesting integers, truncations, insertions, deletions, splices of two seeds;
//! for ONNX also edits of the decoded protobuf: attributes, dimensions, operator types, inputs;
//! for text, token edits) and must end in `Ok` or `Err`: a panic fails the run, and its input is
//! saved under `target/fuzz-crashes/`. A counting allocator records each execution's peak live
//! heap on its thread, which must stay within the reader's budget (see `budget`).
//!
//! `FERROCERT_FUZZ_EXECS` sets executions per reader (the default test runs 20,000) and
//! `FERROCERT_FUZZ_SEED` the run; `scripts/fuzz.sh` runs the ignored `fuzz_readers_long` with
//! 10^6 per reader.

mod common;

use common::netgen::Rng;
use ferrocert::domain::{FpMode, Intervals};
use ferrocert::network::Network;
use ferrocert::{bounds, data::npy, eval, spec};
use onnx_protobuf::{Message, ModelProto};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---- allocation accounting ----------------------------------------------------------------

/// The system allocator, counting live bytes per thread (a thread frees what it allocates here:
/// the readers run on one thread).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    /// The largest single request since the last reset.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    /// The input being read, so that an allocation that will abort the process can save it.
    static CURRENT: Cell<(*const u8, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// A single request this large aborts the process (or exhausts the machine) before the budget
/// check could run: save the input first, then let the allocation proceed.
const HUGE: usize = 8 << 30;

#[cold]
fn save_current_before_abort(size: usize) {
    let _ = CURRENT.try_with(|c| {
        let (p, n) = c.get();
        if !p.is_null() {
            // SAFETY: set by `fuzz_thread` to its live input for the duration of the call.
            let bytes = unsafe { std::slice::from_raw_parts(p, n) };
            let path = crash_dir().join("huge-allocation.bin");
            let _ = std::fs::write(&path, bytes);
            eprintln!(
                "a single request for {size} bytes: input saved to {}",
                path.display()
            );
        }
    });
}

fn note_request(size: usize) {
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}

fn note(delta: isize) {
    // try_with: allocations during thread teardown find the slots gone; they are not ours.
    let _ = LIVE.try_with(|l| {
        let v = l.get().wrapping_add(delta);
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v)
            }
        });
    });
}

/// Book a request of `size` bytes before it is made.
fn before_request(size: usize) {
    if size >= HUGE {
        save_current_before_abort(size);
    }
    note_request(size);
}

/// Book `grown` live bytes if the request (whose result is `p`) succeeded.
fn after_request(p: *mut u8, grown: isize) -> *mut u8 {
    if !p.is_null() {
        note(grown);
    }
    p
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        before_request(l.size());
        after_request(unsafe { System.alloc(l) }, l.size() as isize)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        before_request(l.size());
        after_request(unsafe { System.alloc_zeroed(l) }, l.size() as isize)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        note(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        before_request(new);
        after_request(
            unsafe { System.realloc(p, l, new) },
            new as isize - l.size() as isize,
        )
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap used by one call: its peak growth on this thread and its largest single request.
#[derive(Clone, Copy, Default)]
struct Heap {
    peak: usize,
    largest: usize,
}

/// Run `f`, returning its result and the heap it used.
fn measured<R>(f: impl FnOnce() -> R) -> (R, Heap) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LARGEST.with(|m| m.set(0));
    let r = f();
    let peak = PEAK.with(Cell::get);
    let largest = LARGEST.with(Cell::get);
    (
        r,
        Heap {
            peak: (peak - base).max(0) as usize,
            largest,
        },
    )
}

// ---- readers -------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reader {
    Onnx,
    Vnnlib,
    Npy,
}

impl Reader {
    fn name(self) -> &'static str {
        match self {
            Reader::Onnx => "onnx",
            Reader::Vnnlib => "vnnlib",
            Reader::Npy => "npy",
        }
    }
    fn ext(self) -> &'static str {
        match self {
            Reader::Onnx => "onnx",
            Reader::Vnnlib => "vnnlib",
            Reader::Npy => "npy",
        }
    }
}

/// Whether the heap a reader used on a `len`-byte input is within its budget.
///
/// VNN-LIB and `.npy` hold their data in the file, so their whole peak is linear in its length:
/// a declared size alone (a variable `X_99999999`, a shape of 10^9) must be refused, not
/// allocated. An ONNX file declares shapes that the importer legitimately materialises (index
/// maps of a Reshape, the output of a Tile or Pad of a constant, the scale and shift of an
/// affine map over a declared input), each checked against `MAX_ELEMENTS` before allocating: so
/// no single buffer may exceed what the element cap allows at 16 bytes per element (an f64 and
/// its magnitude, or an index), and the whole import no more than 48 bytes per capped element,
/// plus the file's own data. A product left unchecked (a p x k matrix from two dimensions)
/// breaks the first at once.
fn within_budget(r: Reader, len: usize, h: Heap) -> bool {
    const MIB: usize = 1 << 20;
    let cap = ferrocert::tensor::MAX_ELEMENTS;
    match r {
        Reader::Vnnlib | Reader::Npy => h.peak <= 4 * MIB + 64 * len,
        Reader::Onnx => h.largest <= 16 * cap + 64 * len && h.peak <= 4 * MIB + 64 * len + 48 * cap,
    }
}

/// What one execution reached.
#[derive(Default)]
struct Outcome {
    ok: bool,
}

fn run_reader(r: Reader, bytes: &[u8], scratch: &Path) -> (Outcome, Heap) {
    match r {
        Reader::Onnx => {
            let (net, peak) = measured(|| Network::from_bytes(bytes, &scratch.join("m.onnx")));
            let Ok(net) = net else {
                return (Outcome::default(), peak);
            };
            exercise(&net);
            (Outcome { ok: true }, peak)
        }
        Reader::Vnnlib => {
            let (s, peak) = measured(|| spec::parse_bytes(bytes));
            (Outcome { ok: s.is_ok() }, peak)
        }
        Reader::Npy => {
            let (a, peak) = measured(|| npy::parse(bytes, "fuzz.npy"));
            (Outcome { ok: a.is_ok() }, peak)
        }
    }
}

/// One evaluation and one IBP pass over a network that loaded, when it is small enough to be
/// quick: these consume whatever the importer accepted, so they must not panic either.
fn exercise(net: &Network) {
    let small = |g: &ferrocert::ir::Graph| {
        g.values.len() < 400 && g.values.iter().map(|v| v.numel()).max().unwrap_or(0) <= 1 << 14
    };
    if !small(&net.exec) || !small(&net.analysis) {
        return;
    }
    let n = net.exec.input_numel();
    let x: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
    let _ = eval::forward::<f32>(&net.exec, &x, 1);
    let lo: Vec<f64> = x.iter().map(|&v| v as f64 - 0.05).collect();
    let hi: Vec<f64> = x.iter().map(|&v| v as f64 + 0.05).collect();
    let _ = bounds::ibp(&net.analysis, Intervals::new(lo, hi), 1, FpMode::Deployed);
}

// ---- mutations -----------------------------------------------------------------------------

const INTERESTING: &[i64] = &[
    0,
    1,
    -1,
    2,
    3,
    7,
    -2,
    127,
    128,
    255,
    256,
    65535,
    65536,
    1 << 31,
    (1 << 31) - 1,
    1 << 32,
    1 << 40,
    1 << 62,
    i64::MAX,
    i64::MIN,
];

const TEXT_TOKENS: &[&str] = &[
    "(",
    ")",
    " ",
    "\n",
    ";",
    "0",
    "-0",
    "1e308",
    "-1e308",
    "1e-400",
    "nan",
    "inf",
    "99999999999999999999",
    "0.5",
    "X_0",
    "Y_0",
    "X_268435455",
    "Y_99999999",
    "X_-1",
    "assert",
    "declare-const",
    "Real",
    "Int",
    "and",
    "or",
    "<=",
    ">=",
    "+",
    "-",
    "*",
    "\u{7f}",
    "\u{e9}",
];

fn pick<'a, T>(rng: &mut Rng, v: &'a [T]) -> &'a T {
    &v[rng.int(0, v.len() - 1)]
}

fn byte_mutation(rng: &mut Rng, b: &mut Vec<u8>, other: &[u8]) {
    let len = b.len();
    match rng.int(0, 8) {
        0 if len > 0 => {
            let i = rng.int(0, len - 1);
            b[i] ^= 1 << rng.int(0, 7);
        }
        1 if len > 0 => {
            let i = rng.int(0, len - 1);
            b[i] = rng.next_u64() as u8;
        }
        2 if len > 8 => {
            // An interesting integer, little-endian, as 1, 2, 4 or 8 bytes.
            let w = 1 << rng.int(0, 3);
            let i = rng.int(0, len - w);
            let v = pick(rng, INTERESTING).to_le_bytes();
            b[i..i + w].copy_from_slice(&v[..w]);
        }
        3 => b.truncate(rng.int(0, len)),
        4 => {
            let i = rng.int(0, len);
            let n = rng.int(1, 16);
            let ins: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
            b.splice(i..i, ins);
        }
        5 if len > 0 => {
            let i = rng.int(0, len - 1);
            let j = rng.int(i, len.min(i + 64));
            b.drain(i..j);
        }
        6 if len > 0 && !other.is_empty() => {
            // Splice: a prefix of this seed, a suffix of another.
            let i = rng.int(0, len);
            let j = rng.int(0, other.len());
            b.truncate(i);
            b.extend_from_slice(&other[j..]);
        }
        7 if len > 0 => {
            // Duplicate a range in place.
            let i = rng.int(0, len - 1);
            let j = rng.int(i, len.min(i + 256));
            let part = b[i..j].to_vec();
            let k = rng.int(0, b.len());
            b.splice(k..k, part);
        }
        _ if len > 0 => {
            let i = rng.int(0, len - 1);
            b[i] = *pick(
                rng,
                &[0u8, 0xff, 0x7f, 0x80, b'0', b'9', b'(', b')', b'\'', b','],
            );
        }
        _ => b.push(rng.next_u64() as u8),
    }
}

fn text_mutation(rng: &mut Rng, b: &mut Vec<u8>) {
    let len = b.len();
    let tok = pick(rng, TEXT_TOKENS).as_bytes().to_vec();
    match rng.int(0, 3) {
        0 => {
            let i = rng.int(0, len);
            b.splice(i..i, tok);
        }
        1 if len > 0 => {
            // Replace a token (a run of non-space, non-paren bytes).
            let i = rng.int(0, len - 1);
            let is_sep = |c: u8| c.is_ascii_whitespace() || c == b'(' || c == b')';
            let mut s = i;
            while s > 0 && !is_sep(b[s - 1]) {
                s -= 1;
            }
            let mut e = i;
            while e < len && !is_sep(b[e]) {
                e += 1;
            }
            b.splice(s..e, tok);
        }
        2 if len > 0 => {
            // Delete or duplicate a line.
            let lines: Vec<usize> = std::iter::once(0)
                .chain(
                    b.iter()
                        .enumerate()
                        .filter(|(_, c)| **c == b'\n')
                        .map(|(i, _)| i + 1),
                )
                .collect();
            let k = rng.int(0, lines.len() - 1);
            let s = lines[k];
            let e = lines.get(k + 1).copied().unwrap_or(len);
            if rng.int(0, 1) == 0 {
                b.drain(s..e);
            } else {
                let part = b[s..e].to_vec();
                b.splice(s..s, part);
            }
        }
        _ => {
            let i = rng.int(0, len);
            b.truncate(i);
        }
    }
}

/// Edit the decoded protobuf: what byte flips rarely reach (valid encodings with odd values).
fn onnx_mutation(rng: &mut Rng, b: &mut Vec<u8>) {
    let Ok(mut m) = ModelProto::parse_from_bytes(b) else {
        return;
    };
    let Some(g) = m.graph.as_mut() else { return };
    let interesting = |rng: &mut Rng| *pick(rng, INTERESTING);
    match rng.int(0, 9) {
        0 | 1 if !g.node.is_empty() => {
            // An integer attribute or one element of an integer list.
            let n = rng.int(0, g.node.len() - 1);
            let node = &mut g.node[n];
            if node.attribute.is_empty() {
                let name = *pick(rng, &["axis", "group", "keepdims", "transB", "num_outputs"]);
                let v = interesting(rng);
                node.attribute
                    .push(ferrocert::onnx::build::attr_int(name, v));
            } else {
                let a = rng.int(0, node.attribute.len() - 1);
                let v = interesting(rng);
                let attr = &mut node.attribute[a];
                if attr.ints.is_empty() {
                    attr.i = v;
                    attr.f = f32::from_bits(rng.next_u64() as u32);
                } else {
                    let k = rng.int(0, attr.ints.len() - 1);
                    attr.ints[k] = v;
                }
            }
        }
        2 if !g.node.is_empty() => {
            let n = rng.int(0, g.node.len() - 1);
            g.node[n].op_type = pick(rng, &ferrocert::onnx::supported_ops()).to_string();
        }
        3 if !g.node.is_empty() => {
            // Drop, repeat or swap an input.
            let n = rng.int(0, g.node.len() - 1);
            let node = &mut g.node[n];
            let k = node.input.len();
            match (rng.int(0, 2), k) {
                (0, k) if k > 0 => {
                    node.input.remove(rng.int(0, k - 1));
                }
                (1, k) if k > 0 => {
                    let v = node.input[rng.int(0, k - 1)].clone();
                    node.input.push(v);
                }
                (_, k) if k > 1 => node.input.swap(0, k - 1),
                _ => node.input.push(String::new()),
            }
        }
        4 if !g.node.is_empty() => {
            // Drop a node or duplicate one.
            let n = rng.int(0, g.node.len() - 1);
            if rng.int(0, 1) == 0 {
                g.node.remove(n);
            } else {
                let c = g.node[n].clone();
                g.node.push(c);
            }
        }
        5 | 6 if !g.initializer.is_empty() => {
            let t = rng.int(0, g.initializer.len() - 1);
            let init = &mut g.initializer[t];
            match rng.int(0, 3) {
                0 if !init.dims.is_empty() => {
                    let d = rng.int(0, init.dims.len() - 1);
                    init.dims[d] = interesting(rng);
                }
                1 => init.data_type = *pick(rng, &[0, 1, 6, 7, 9, 10, 11, 16, 99]),
                2 => init.raw_data.truncate(rng.int(0, init.raw_data.len())),
                _ => {
                    if init.dims.is_empty() {
                        init.dims.push(interesting(rng));
                    } else {
                        init.dims.pop();
                    }
                }
            }
        }
        7 if !g.input.is_empty() => {
            // A graph input dimension.
            use onnx_protobuf::tensor_shape_proto::dimension::Value as DimValue;
            let i = rng.int(0, g.input.len() - 1);
            if let Some(onnx_protobuf::type_proto::Value::TensorType(t)) =
                g.input[i].type_.as_mut().and_then(|t| t.value.as_mut())
            {
                if let Some(s) = t.shape.as_mut() {
                    if !s.dim.is_empty() {
                        let d = rng.int(0, s.dim.len() - 1);
                        s.dim[d].value = Some(DimValue::DimValue(interesting(rng)));
                    }
                }
            }
        }
        8 => {
            if let Some(o) = m.opset_import.first_mut() {
                o.version = *pick(rng, &[1, 6, 7, 9, 10, 11, 12, 13, 17, 18, 21, 99, -1]);
            }
        }
        _ => {
            if let Some(o) = g.output.first_mut() {
                o.name = g
                    .node
                    .first()
                    .and_then(|n| n.output.first())
                    .cloned()
                    .unwrap_or_default();
            }
        }
    }
    if let Ok(out) = m.write_to_bytes() {
        *b = out;
    }
}

fn mutate(rng: &mut Rng, r: Reader, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..rng.int(1, 4) {
        match (r, rng.int(0, 2)) {
            (Reader::Onnx, 0) => onnx_mutation(rng, &mut b),
            (Reader::Vnnlib | Reader::Npy, 0) => text_mutation(rng, &mut b),
            _ => byte_mutation(rng, &mut b, other),
        }
    }
    b
}

// ---- seeds ---------------------------------------------------------------------------------

/// Seed files: the repository's own, then the shared suites' (smaller than `max_len`),
/// deduplicated by content and sorted by path so that a seed gives the same run.
fn seeds(r: Reader) -> Vec<(PathBuf, Vec<u8>)> {
    let max_len = match r {
        Reader::Onnx => 64 << 10,
        Reader::Vnnlib => 16 << 10,
        Reader::Npy => 256 << 10,
    };
    let mut dirs = vec![
        common::repo("models"),
        common::repo("specs"),
        common::repo("tests/data"),
    ];
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/benchmarks");
    if shared.is_dir() {
        dirs.push(shared);
    } else {
        eprintln!("*** ../shared/benchmarks absent: fuzzing from the repository's seeds only ***");
    }
    let mut out: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if r == Reader::Npy {
        // The bundled arrays are all float32 in version 1: add every dtype and version the
        // reader accepts, so that mutations start from each of its paths.
        for (k, b) in npy_seeds().into_iter().enumerate() {
            seen.insert(b.clone());
            out.push((PathBuf::from(format!("constructed-{k}.npy")), b));
        }
    }
    for d in dirs {
        for p in common::files_with_ext(&d, r.ext()) {
            let Ok(b) = std::fs::read(&p) else { continue };
            if b.len() <= max_len && seen.insert(b.clone()) {
                out.push((p, b));
            }
        }
    }
    out
}

/// Small valid `.npy` files: each dtype, both byte orders, versions 1 to 3, 0-d to 3-d shapes.
fn npy_seeds() -> Vec<Vec<u8>> {
    let dtypes: &[(&str, usize)] = &[
        ("<f4", 4),
        (">f4", 4),
        ("<f8", 8),
        (">f8", 8),
        ("|u1", 1),
        ("|i1", 1),
        ("<u2", 2),
        ("<i2", 2),
        ("<i4", 4),
        ("<u4", 4),
        ("<i8", 8),
        (">i8", 8),
        ("<u8", 8),
        ("|b1", 1),
    ];
    let shapes: &[&[usize]] = &[&[], &[3], &[2, 3], &[2, 1, 2]];
    let mut out = Vec::new();
    for (k, &(descr, size)) in dtypes.iter().enumerate() {
        for version in 1u8..=3 {
            let shape = shapes[(k + version as usize) % shapes.len()];
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            let tuple = match dims.len() {
                1 => format!("({},)", dims[0]),
                _ => format!("({})", dims.join(", ")),
            };
            let mut header =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
            let prefix = if version == 1 { 10 } else { 12 };
            while (prefix + header.len() + 1) % 64 != 0 {
                header.push(' ');
            }
            header.push('\n');
            let mut b = b"\x93NUMPY".to_vec();
            b.extend_from_slice(&[version, 0]);
            if version == 1 {
                b.extend_from_slice(&(header.len() as u16).to_le_bytes());
            } else {
                b.extend_from_slice(&(header.len() as u32).to_le_bytes());
            }
            b.extend_from_slice(header.as_bytes());
            let n: usize = shape.iter().product();
            b.extend((0..n * size).map(|i| {
                if descr == "|b1" {
                    (i % 2) as u8
                } else {
                    i as u8
                }
            }));
            out.push(b);
        }
    }
    out
}

// ---- the loop ------------------------------------------------------------------------------

#[derive(Default)]
struct Tally {
    execs: u64,
    ok: u64,
    panics: Vec<(PathBuf, String)>,
    over_budget: Vec<(PathBuf, usize, usize)>,
    peak: usize,
    largest: usize,
    peak_ratio: f64,
    over_gib: u64,
    slowest: Duration,
}

/// Executions whose peak heap exceeds this are saved as `*-heavy-*` for inspection.
const HEAVY: usize = 2 << 30;

fn crash_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../fuzz-crashes");
    let _ = std::fs::create_dir_all(&d);
    d
}

fn save(r: Reader, kind: &str, bytes: &[u8]) -> PathBuf {
    let h = ferrocert::onnx::sha256_hex(bytes);
    let p = crash_dir().join(format!("{}-{kind}-{}.{}", r.name(), &h[..16], r.ext()));
    let _ = std::fs::write(&p, bytes);
    p
}

fn fuzz_thread(r: Reader, seeds: &[(PathBuf, Vec<u8>)], execs: u64, seed: u64) -> Tally {
    let scratch = common::scratch(&format!("fuzz-{}-{seed}", r.name()));
    let mut rng = Rng(seed);
    let mut t = Tally::default();
    for _ in 0..execs {
        let a = &seeds[rng.int(0, seeds.len() - 1)].1;
        let b = &seeds[rng.int(0, seeds.len() - 1)].1;
        let input = mutate(&mut rng, r, a, b);
        CURRENT.with(|c| c.set((input.as_ptr(), input.len())));
        let start = Instant::now();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_reader(r, &input, &scratch)
        }));
        CURRENT.with(|c| c.set((std::ptr::null(), 0)));
        t.slowest = t.slowest.max(start.elapsed());
        t.execs += 1;
        match res {
            Ok((o, h)) => {
                t.ok += u64::from(o.ok);
                t.peak = t.peak.max(h.peak);
                t.largest = t.largest.max(h.largest);
                t.over_gib += u64::from(h.peak > 1 << 30);
                t.peak_ratio = t.peak_ratio.max(h.peak as f64 / input.len().max(1) as f64);
                if h.peak > HEAVY {
                    // Within budget but worth a look: kept, not failed.
                    save(r, "heavy", &input);
                }
                if !within_budget(r, input.len(), h) {
                    t.over_budget
                        .push((save(r, "alloc", &input), h.peak, input.len()));
                }
            }
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                t.panics.push((save(r, "panic", &input), msg));
            }
        }
    }
    t
}

fn fuzz(r: Reader, execs: u64) {
    let seeds = seeds(r);
    assert!(!seeds.is_empty(), "no {} seeds", r.ext());
    // Panics are caught and reported below; the default hook would print each one.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8) as u64;
    let start = Instant::now();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|i| {
                let seeds = &seeds;
                let n = execs / threads + u64::from(i < execs % threads);
                s.spawn(move || fuzz_thread(r, seeds, n, base_seed() * 64 + i))
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().expect("fuzz thread"))
            .collect()
    });
    std::panic::set_hook(hook);
    let secs = start.elapsed().as_secs_f64();
    let mut all = Tally::default();
    for t in tallies {
        all.execs += t.execs;
        all.ok += t.ok;
        all.panics.extend(t.panics);
        all.over_budget.extend(t.over_budget);
        all.peak = all.peak.max(t.peak);
        all.largest = all.largest.max(t.largest);
        all.over_gib += t.over_gib;
        all.peak_ratio = all.peak_ratio.max(t.peak_ratio);
        all.slowest = all.slowest.max(t.slowest);
    }
    eprintln!(
        "fuzz {}: {} execs from {} seeds in {secs:.1} s ({:.0}/s, {threads} threads), {} accepted, \
         {} panics, {} over the allocation budget, largest peak heap {:.1} MiB ({:.0} bytes per \
         input byte at most; {} execs above 1 GiB), largest single request {:.1} MiB, slowest \
         exec {:.0} ms",
        r.name(),
        all.execs,
        seeds.len(),
        all.execs as f64 / secs,
        all.ok,
        all.panics.len(),
        all.over_budget.len(),
        all.peak as f64 / (1 << 20) as f64,
        all.peak_ratio,
        all.over_gib,
        all.largest as f64 / (1 << 20) as f64,
        all.slowest.as_secs_f64() * 1e3,
    );
    for (p, msg) in all.panics.iter().take(10) {
        eprintln!("  panic: {msg} ({})", p.display());
    }
    for (p, peak, len) in all.over_budget.iter().take(10) {
        eprintln!(
            "  peak {peak} bytes for a {len}-byte input ({})",
            p.display()
        );
    }
    assert!(
        all.panics.is_empty() && all.over_budget.is_empty(),
        "{} panics, {} over budget",
        all.panics.len(),
        all.over_budget.len()
    );
}

/// `FERROCERT_FUZZ_SEED` (default 0): each value gives another, reproducible, run.
fn base_seed() -> u64 {
    std::env::var("FERROCERT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn execs(default: u64) -> u64 {
    std::env::var("FERROCERT_FUZZ_EXECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fuzz_readers_briefly() {
    for r in [Reader::Npy, Reader::Vnnlib, Reader::Onnx] {
        fuzz(r, execs(20_000));
    }
}

/// The long run: `scripts/fuzz.sh` (10^6 executions per reader by default).
#[test]
#[ignore]
fn fuzz_readers_long() {
    for r in [Reader::Npy, Reader::Vnnlib, Reader::Onnx] {
        fuzz(r, execs(1_000_000));
    }
}

#[test]
fn regressions_stay_fixed() {
    let scratch = common::scratch("fuzz-regressions");
    let mut n = 0;
    for r in [Reader::Npy, Reader::Vnnlib, Reader::Onnx] {
        for p in common::files_with_ext(&common::repo("tests/data/fuzz"), r.ext()) {
            let b = std::fs::read(&p).unwrap();
            let (o, h) = run_reader(r, &b, &scratch);
            assert!(!o.ok, "{} is accepted", p.display());
            assert!(
                within_budget(r, b.len(), h),
                "{}: peak {} bytes, largest request {}",
                p.display(),
                h.peak,
                h.largest
            );
            n += 1;
        }
    }
    assert!(n >= 3, "only {n} regression inputs");
}

#[test]
fn constructed_npy_seeds_are_valid() {
    // Otherwise the seeds would start every mutation from an error path.
    for (k, b) in npy_seeds().iter().enumerate() {
        let a = npy::parse(b, "seed.npy").unwrap_or_else(|e| panic!("seed {k}: {e}"));
        assert_eq!(a.data.len(), a.shape.iter().product::<usize>(), "seed {k}");
    }
}
