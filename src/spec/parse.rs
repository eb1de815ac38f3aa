//! Single-pass VNN-LIB reader: a byte lexer with line/column tracking and a recursive-descent
//! parser that builds linear constraints directly (no intermediate S-expression tree), so a
//! multi-megabyte specification parses in milliseconds.

use super::{Constraint, MAX_DISJUNCTS, Spec, SpecError, build_regions};

/// Deepest `and`/`or`/term nesting accepted (guards the parser's stack).
const MAX_DEPTH: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Tok<'a> {
    Open,
    Close,
    Atom(&'a [u8]),
    Eof,
}

struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
    col: usize,
}

impl<'a> Lexer<'a> {
    fn skip_ws(&mut self) {
        while self.pos < self.src.len() {
            match self.src[self.pos] {
                b'\n' => {
                    self.pos += 1;
                    self.line += 1;
                    self.col = 1;
                }
                b' ' | b'\t' | b'\r' => {
                    self.pos += 1;
                    self.col += 1;
                }
                b';' => {
                    while self.pos < self.src.len() && self.src[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    /// Next token with the line and column where it starts.
    fn next(&mut self) -> (Tok<'a>, usize, usize) {
        self.skip_ws();
        let (line, col) = (self.line, self.col);
        if self.pos >= self.src.len() {
            return (Tok::Eof, line, col);
        }
        let c = self.src[self.pos];
        match c {
            b'(' | b')' => {
                self.pos += 1;
                self.col += 1;
                (if c == b'(' { Tok::Open } else { Tok::Close }, line, col)
            }
            _ => {
                let start = self.pos;
                while self.pos < self.src.len()
                    && !matches!(
                        self.src[self.pos],
                        b'(' | b')' | b' ' | b'\t' | b'\r' | b'\n' | b';'
                    )
                {
                    self.pos += 1;
                }
                self.col += self.pos - start;
                (Tok::Atom(&self.src[start..self.pos]), line, col)
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Var {
    X(usize),
    Y(usize),
}

/// Linear expression `sum c v + k`.
#[derive(Default)]
struct Lin {
    terms: Vec<(Var, f64)>,
    k: f64,
}

impl Lin {
    fn scale(mut self, s: f64) -> Lin {
        self.terms.iter_mut().for_each(|t| t.1 *= s);
        self.k *= s;
        self
    }
    fn add(mut self, o: Lin) -> Lin {
        self.terms.extend(o.terms);
        self.k += o.k;
        self
    }
}

/// Formula tree over atoms (indices into `Parser::atoms`).
enum F {
    Atom(usize),
    And(Vec<F>),
    Or(Vec<F>),
}

/// An atom: `sum c v <= rhs` (strict or not) over one variable kind.
struct Atom {
    output: bool,
    c: Constraint,
}

/// Declared variable indices. A set, not a table indexed by them: memory follows the number of
/// declarations in the text, never an index (`X_99999999` alone must not allocate 100 MB).
#[derive(Default)]
struct Declared(std::collections::HashSet<usize>);

impl Declared {
    /// How many variables: one past the largest index (0 when none).
    fn count(&self) -> usize {
        self.0.iter().max().map_or(0, |m| m + 1)
    }
    /// The smallest index below [`Self::count`] that was not declared.
    fn first_gap(&self) -> Option<usize> {
        if self.0.len() == self.count() {
            return None;
        }
        let mut v: Vec<usize> = self.0.iter().copied().collect();
        v.sort_unstable();
        Some(
            v.iter()
                .enumerate()
                .find(|(k, i)| k != *i)
                .map_or(v.len(), |(k, _)| k),
        )
    }
}

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<(Tok<'a>, usize, usize)>,
    declared_x: Declared,
    declared_y: Declared,
    atoms: Vec<Atom>,
    asserts: Vec<F>,
}

fn err(line: usize, col: usize, msg: impl Into<String>) -> SpecError {
    SpecError::Syntax {
        line,
        col,
        msg: msg.into(),
    }
}

fn show(t: Tok) -> String {
    match t {
        Tok::Open => "'('".into(),
        Tok::Close => "')'".into(),
        Tok::Atom(a) => format!("'{}'", String::from_utf8_lossy(a)),
        Tok::Eof => "end of file".into(),
    }
}

fn parse_number(a: &[u8]) -> Option<f64> {
    let first = *a.first()?;
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return None;
    }
    std::str::from_utf8(a)
        .ok()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

fn parse_var(a: &[u8]) -> Option<Var> {
    let (kind, rest) = a.split_first()?;
    let digits = rest.strip_prefix(b"_")?;
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let i: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    match kind {
        b'X' => Some(Var::X(i)),
        b'Y' => Some(Var::Y(i)),
        _ => None,
    }
}

impl<'a> Parser<'a> {
    fn next(&mut self) -> (Tok<'a>, usize, usize) {
        self.peeked.take().unwrap_or_else(|| self.lex.next())
    }
    fn peek(&mut self) -> Tok<'a> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex.next());
        }
        self.peeked.map_or(Tok::Eof, |p| p.0)
    }
    fn expect(&mut self, want: Tok, what: &str) -> Result<(), SpecError> {
        let (t, l, c) = self.next();
        if t != want {
            return Err(err(l, c, format!("expected {what}, found {}", show(t))));
        }
        Ok(())
    }
    fn atom(&mut self, what: &str) -> Result<(&'a [u8], usize, usize), SpecError> {
        match self.next() {
            (Tok::Atom(a), l, c) => Ok((a, l, c)),
            (t, l, c) => Err(err(l, c, format!("expected {what}, found {}", show(t)))),
        }
    }

    fn commands(&mut self) -> Result<(), SpecError> {
        loop {
            match self.next() {
                (Tok::Eof, _, _) => return Ok(()),
                (Tok::Open, _, _) => {}
                (t, l, c) => {
                    return Err(err(
                        l,
                        c,
                        format!("expected '(' to start a command, found {}", show(t)),
                    ));
                }
            }
            let (cmd, l, c) = self.atom("a command")?;
            match cmd {
                b"declare-const" => {
                    let (name, nl, nc) = self.atom("a variable name")?;
                    let (ty, tl, tc) = self.atom("a sort")?;
                    if ty != b"Real" {
                        return Err(err(
                            tl,
                            tc,
                            format!(
                                "unsupported sort '{}' (only Real)",
                                String::from_utf8_lossy(ty)
                            ),
                        ));
                    }
                    let (table, i) = match parse_var(name) {
                        Some(Var::X(i)) => (&mut self.declared_x, i),
                        Some(Var::Y(i)) => (&mut self.declared_y, i),
                        None => {
                            return Err(err(
                                nl,
                                nc,
                                format!(
                                    "variable '{}' is neither X_<i> (input) nor Y_<j> (output)",
                                    String::from_utf8_lossy(name)
                                ),
                            ));
                        }
                    };
                    if i >= crate::tensor::MAX_ELEMENTS {
                        return Err(err(nl, nc, "variable index is too large"));
                    }
                    if !table.0.insert(i) {
                        return Err(err(
                            nl,
                            nc,
                            format!("'{}' declared twice", String::from_utf8_lossy(name)),
                        ));
                    }
                    self.expect(Tok::Close, "')'")?;
                }
                b"assert" => {
                    let f = self.formula(0)?;
                    self.asserts.push(f);
                    self.expect(Tok::Close, "')' closing assert")?;
                }
                b"set-logic" | b"set-info" | b"set-option" | b"check-sat" | b"get-model"
                | b"exit" => {
                    self.skip_to_close(l, c)?;
                }
                other => {
                    return Err(err(
                        l,
                        c,
                        format!("unknown command '{}'", String::from_utf8_lossy(other)),
                    ));
                }
            }
        }
    }

    fn skip_to_close(&mut self, l: usize, c: usize) -> Result<(), SpecError> {
        let mut depth = 1usize;
        while depth > 0 {
            match self.next().0 {
                Tok::Open => depth += 1,
                Tok::Close => depth -= 1,
                Tok::Eof => return Err(err(l, c, "unterminated command")),
                Tok::Atom(_) => {}
            }
        }
        Ok(())
    }

    fn formula(&mut self, depth: usize) -> Result<F, SpecError> {
        let (t, l, c) = self.next();
        if t != Tok::Open {
            return Err(err(
                l,
                c,
                format!("expected '(' to start a formula, found {}", show(t)),
            ));
        }
        if depth > MAX_DEPTH {
            return Err(err(l, c, "formula nested too deeply"));
        }
        let (head, hl, hc) = self.atom("and, or, <=, >=, <, > or =")?;
        let f = match head {
            b"and" | b"or" => {
                let mut kids = Vec::new();
                while self.peek() != Tok::Close {
                    kids.push(self.formula(depth + 1)?);
                }
                if head == b"and" {
                    F::And(kids)
                } else {
                    F::Or(kids)
                }
            }
            b"<=" | b">=" | b"<" | b">" | b"=" => {
                let a = self.term(depth + 1)?;
                let b = self.term(depth + 1)?;
                let strict = matches!(head, b"<" | b">");
                // a <= b  <=>  a - b <= 0;  a >= b  <=>  b - a <= 0.
                let le = |x: Lin, y: Lin| x.add(y.scale(-1.0));
                match head {
                    b"=" => {
                        let d1 = le(a, b);
                        let d2 = d1.clone_neg();
                        let x = self.push_atom(d1, false, hl, hc)?;
                        let y = self.push_atom(d2, false, hl, hc)?;
                        F::And(vec![x, y])
                    }
                    b"<=" | b"<" => self.push_atom(le(a, b), strict, hl, hc)?,
                    _ => self.push_atom(le(b, a), strict, hl, hc)?,
                }
            }
            other => {
                return Err(err(
                    hl,
                    hc,
                    format!("unsupported operator '{}'", String::from_utf8_lossy(other)),
                ));
            }
        };
        self.expect(Tok::Close, "')'")?;
        Ok(f)
    }

    fn check_declared(&self, v: Var, l: usize, c: usize) -> Result<(), SpecError> {
        let ok = match v {
            Var::X(i) => self.declared_x.0.contains(&i),
            Var::Y(i) => self.declared_y.0.contains(&i),
        };
        if ok {
            Ok(())
        } else {
            let name = match v {
                Var::X(i) => format!("X_{i}"),
                Var::Y(i) => format!("Y_{i}"),
            };
            Err(err(
                l,
                c,
                format!("variable '{name}' is used but not declared"),
            ))
        }
    }

    fn term(&mut self, depth: usize) -> Result<Lin, SpecError> {
        let (t, l, c) = self.next();
        match t {
            Tok::Atom(a) => {
                if let Some(v) = parse_number(a) {
                    return Ok(Lin {
                        terms: vec![],
                        k: v,
                    });
                }
                match parse_var(a) {
                    Some(v) => {
                        self.check_declared(v, l, c)?;
                        Ok(Lin {
                            terms: vec![(v, 1.0)],
                            k: 0.0,
                        })
                    }
                    None => Err(err(
                        l,
                        c,
                        format!(
                            "unknown variable or bad number '{}'",
                            String::from_utf8_lossy(a)
                        ),
                    )),
                }
            }
            Tok::Open => {
                if depth > MAX_DEPTH {
                    return Err(err(l, c, "term nested too deeply"));
                }
                let (op, ol, oc) = self.atom("+, - or *")?;
                let mut args = Vec::new();
                while self.peek() != Tok::Close {
                    args.push(self.term(depth + 1)?);
                }
                self.expect(Tok::Close, "')'")?;
                let mut it = args.into_iter();
                let Some(first) = it.next() else {
                    return Err(err(ol, oc, "operator without arguments"));
                };
                match op {
                    b"+" => Ok(it.fold(first, Lin::add)),
                    b"-" => {
                        let rest: Vec<Lin> = it.collect();
                        if rest.is_empty() {
                            Ok(first.scale(-1.0))
                        } else {
                            Ok(rest
                                .into_iter()
                                .fold(first, |acc, x| acc.add(x.scale(-1.0))))
                        }
                    }
                    b"*" => {
                        let mut acc = first;
                        for x in it {
                            acc = if acc.terms.is_empty() {
                                x.scale(acc.k)
                            } else if x.terms.is_empty() {
                                acc.scale(x.k)
                            } else {
                                return Err(err(
                                    ol,
                                    oc,
                                    "product of two variables (only linear terms are supported)",
                                ));
                            };
                        }
                        Ok(acc)
                    }
                    other => Err(err(
                        ol,
                        oc,
                        format!(
                            "unsupported term operator '{}'",
                            String::from_utf8_lossy(other)
                        ),
                    )),
                }
            }
            other => Err(err(l, c, format!("expected a term, found {}", show(other)))),
        }
    }

    /// Record `lin <= 0` as an atom over inputs or outputs.
    fn push_atom(&mut self, lin: Lin, strict: bool, l: usize, c: usize) -> Result<F, SpecError> {
        let has_x = lin.terms.iter().any(|t| matches!(t.0, Var::X(_)));
        let has_y = lin.terms.iter().any(|t| matches!(t.0, Var::Y(_)));
        if has_x && has_y {
            return Err(err(l, c, "a constraint mixes inputs and outputs"));
        }
        // Merge repeated variables.
        let mut coeffs: Vec<(usize, f64)> = Vec::with_capacity(lin.terms.len());
        for (v, a) in lin.terms {
            let i = match v {
                Var::X(i) | Var::Y(i) => i,
            };
            match coeffs.iter_mut().find(|e| e.0 == i) {
                Some(e) => e.1 += a,
                None => coeffs.push((i, a)),
            }
        }
        coeffs.retain(|e| e.1 != 0.0);
        // A constant atom (no variables) is kept as an output atom `0 <= rhs`, which every
        // point satisfies or none does.
        let id = self.atoms.len();
        self.atoms.push(Atom {
            output: has_y || !has_x,
            c: Constraint {
                coeffs,
                rhs: -lin.k,
                strict,
            },
        });
        Ok(F::Atom(id))
    }
}

impl Lin {
    fn clone_neg(&self) -> Lin {
        Lin {
            terms: self.terms.iter().map(|&(v, a)| (v, -a)).collect(),
            k: -self.k,
        }
    }
}

/// What the DNF expansion may still build: atom occurrences over all terms it creates. Nested
/// disjunctions multiply, so a file of a few hundred bytes can describe 2^20 disjuncts of 20
/// atoms each; the expansion is allowed [`DNF_REFS_PER_BYTE`] occurrences per byte of text (at
/// least [`DNF_REFS_MIN`]), which anything written out stays far below, and is refused beyond.
struct DnfBudget {
    left: std::cell::Cell<usize>,
    limit: usize,
}

/// Atom occurrences the DNF may hold per byte of VNN-LIB text.
const DNF_REFS_PER_BYTE: usize = 16;
/// Atom occurrences any spec may expand to, whatever its length.
const DNF_REFS_MIN: usize = 1 << 16;

impl DnfBudget {
    fn for_text(len: usize) -> Self {
        let limit = len.saturating_mul(DNF_REFS_PER_BYTE).max(DNF_REFS_MIN);
        DnfBudget {
            left: std::cell::Cell::new(limit),
            limit,
        }
    }
    fn spend(&self, refs: usize) -> Result<(), SpecError> {
        match self.left.get().checked_sub(refs) {
            Some(l) => {
                self.left.set(l);
                Ok(())
            }
            None => Err(SpecError::DnfTooLarge(self.limit)),
        }
    }
}

/// DNF of a formula as lists of atom ids, refusing to exceed [`MAX_DISJUNCTS`] or the budget.
fn dnf(f: &F, budget: &DnfBudget) -> Result<Vec<Vec<usize>>, SpecError> {
    match f {
        F::Atom(a) => {
            budget.spend(1)?;
            Ok(vec![vec![*a]])
        }
        F::Or(kids) => {
            let mut out = Vec::new();
            for k in kids {
                out.extend(dnf(k, budget)?);
                if out.len() > MAX_DISJUNCTS {
                    return Err(SpecError::TooLarge(MAX_DISJUNCTS));
                }
            }
            Ok(out)
        }
        F::And(kids) => and_dnf(kids.iter(), budget),
    }
}

/// DNF of a conjunction: plain atoms are collected once, disjunctive children multiply.
fn and_dnf<'f>(
    kids: impl Iterator<Item = &'f F>,
    budget: &DnfBudget,
) -> Result<Vec<Vec<usize>>, SpecError> {
    let mut base = Vec::new();
    let mut factors = Vec::new();
    let mut stack: Vec<&F> = kids.collect();
    stack.reverse();
    while let Some(k) = stack.pop() {
        match k {
            F::Atom(a) => base.push(*a),
            F::And(inner) => stack.extend(inner.iter().rev()),
            F::Or(_) => factors.push(dnf(k, budget)?),
        }
    }
    budget.spend(base.len())?;
    let mut terms = vec![base];
    for fac in factors {
        if terms.len().saturating_mul(fac.len()) > MAX_DISJUNCTS {
            return Err(SpecError::TooLarge(MAX_DISJUNCTS));
        }
        // Every pair (t, d) becomes a term of |t| + |d| atoms: pay before building them.
        let refs = |v: &[Vec<usize>]| v.iter().map(Vec::len).fold(0usize, usize::saturating_add);
        let cost = fac
            .len()
            .saturating_mul(refs(&terms))
            .saturating_add(terms.len().saturating_mul(refs(&fac)));
        budget.spend(cost)?;
        let mut next = Vec::with_capacity(terms.len() * fac.len());
        for t in &terms {
            for d in &fac {
                let mut n = t.clone();
                n.extend_from_slice(d);
                next.push(n);
            }
        }
        terms = next;
    }
    Ok(terms)
}

/// Parse VNN-LIB text.
pub fn parse_str(text: &str) -> Result<Spec, SpecError> {
    parse_bytes(text.as_bytes())
}

/// Parse VNN-LIB bytes (what a file holds; not necessarily UTF-8).
pub fn parse_bytes(src: &[u8]) -> Result<Spec, SpecError> {
    let mut p = Parser {
        lex: Lexer {
            src,
            pos: 0,
            line: 1,
            col: 1,
        },
        peeked: None,
        declared_x: Declared::default(),
        declared_y: Declared::default(),
        atoms: Vec::new(),
        asserts: Vec::new(),
    };
    p.commands()?;
    let nx = p.declared_x.count();
    let ny = p.declared_y.count();
    if let Some(i) = p.declared_x.first_gap() {
        return Err(err(
            1,
            1,
            format!(
                "inputs are declared up to X_{} but X_{i} is missing",
                nx - 1
            ),
        ));
    }
    if let Some(i) = p.declared_y.first_gap() {
        return Err(err(
            1,
            1,
            format!(
                "outputs are declared up to Y_{} but Y_{i} is missing",
                ny - 1
            ),
        ));
    }
    let terms = and_dnf(p.asserts.iter(), &DnfBudget::for_text(src.len()))?;
    let atoms = &p.atoms;
    let split = terms
        .into_iter()
        .map(|t| {
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for a in t {
                let at = &atoms[a];
                if at.output {
                    ys.push(at.c.clone());
                } else {
                    xs.push(at.c.clone());
                }
            }
            (xs, ys)
        })
        .collect();
    let regions = build_regions(nx, split)?;
    Ok(Spec {
        num_inputs: nx,
        num_outputs: ny,
        regions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n";

    #[test]
    fn box_and_output_disjunction() {
        let s = parse_str(&format!(
            "{HEAD}(assert (<= X_0 1))(assert (>= X_0 -1.5))(assert (<= X_1 2e-1))(assert (>= X_1 0))\n\
             (assert (or (and (>= Y_0 Y_1)) (and (<= Y_1 3) (> Y_0 1))))"
        ))
        .unwrap();
        assert_eq!((s.num_inputs, s.num_outputs), (2, 2));
        assert_eq!(s.regions.len(), 1);
        let r = &s.regions[0];
        assert_eq!(r.lower, vec![-1.5, 0.0]);
        assert_eq!(r.upper, vec![1.0, 0.2]);
        assert_eq!(r.disjuncts.len(), 2);
        // Y_1 - Y_0 <= 0
        assert_eq!(r.disjuncts[0][0].coeffs, vec![(1, 1.0), (0, -1.0)]);
        assert!(r.violated_by(&[2.0, 1.0]).is_some());
        assert!(r.violated_by(&[0.0, 1.0]).is_none());
    }

    #[test]
    fn disjunction_over_inputs_makes_regions() {
        let s = parse_str(&format!(
            "{HEAD}(assert (or (and (<= X_0 1) (>= X_0 0) (<= X_1 1) (>= X_1 0)) (and (<= X_0 3) (>= X_0 2) (<= X_1 1) (>= X_1 0))))\n\
             (assert (or (and (<= Y_0 0)) (and (<= Y_1 0))))"
        ))
        .unwrap();
        assert_eq!(s.regions.len(), 2);
        assert!(s.regions.iter().all(|r| r.disjuncts.len() == 2));
    }

    #[test]
    fn errors_carry_line_and_column() {
        let e = parse_str("(declare-const X_0 Real)\n(assert (<= X_0 Z_3))").unwrap_err();
        assert!(
            matches!(
                e,
                SpecError::Syntax {
                    line: 2,
                    col: 17,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_str("(declare-const X_0 Real)\n(assert (<= X_1 1))").unwrap_err();
        assert!(e.to_string().contains("X_1"), "{e}");
        let e = parse_str("(declare-const X_0 Real)\n(assert (<= X_0 1)").unwrap_err();
        assert!(matches!(e, SpecError::Syntax { .. }), "{e}");
    }

    #[test]
    fn unbounded_input_is_an_error() {
        let e = parse_str(&format!(
            "{HEAD}(assert (<= X_0 1))(assert (>= X_0 0))(assert (<= Y_0 0))"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("X_1"), "{e}");
    }

    #[test]
    fn linear_terms_and_equality() {
        let s = parse_str(&format!(
            "{HEAD}(assert (and (<= X_0 1) (>= X_0 0) (= X_1 0.5)))(assert (<= (+ Y_0 (* 2 Y_1) (- 1)) 3))"
        ))
        .unwrap();
        let r = &s.regions[0];
        assert_eq!((r.lower[1], r.upper[1]), (0.5, 0.5));
        assert_eq!(r.disjuncts[0][0].coeffs, vec![(0, 1.0), (1, 2.0)]);
        assert_eq!(r.disjuncts[0][0].rhs, 4.0);
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!(
            "{HEAD}(assert {}(<= Y_0 0){})",
            "(and ".repeat(10_000),
            ")".repeat(10_000)
        );
        assert!(parse_str(&deep).is_err());
    }
}
