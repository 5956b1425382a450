//! Exclude patterns for the backup walk, with the matching rules of gitignore(5).
//!
//! Patterns come from an account's `exclude` list and from `--exclude`; they are matched against the path of an
//! entry relative to the backup source root. As in gitignore:
//!
//! - the last pattern that matches decides; a pattern starting with `!` re-includes what it matches;
//! - a trailing `/` matches directories only;
//! - a `/` at the start or in the middle anchors the pattern at the source root (a leading `/` is then dropped);
//!   without one, the pattern matches the entry's name at any depth, like `**/pattern`;
//! - `*` matches any run of bytes but `/`, `?` one byte but `/`, `[a-z]`, `[!a-z]`, `[^a-z]` and `[[:digit:]]`
//!   one byte of (or not of) a class, and `\` makes the next byte literal;
//! - `**` as a whole component matches any number of directories: `**/x` at any depth, `a/**/b` with zero or
//!   more directories between, and `a/**` everything inside `a` (but not `a` itself); elsewhere `**` is `*`.
//!
//! Since the walker does not descend into an excluded directory, nothing below it can be re-included, as in git.
//!
//! Differences from a `.gitignore` file follow from every string being exactly one pattern: there are no
//! comments (`#` is literal) and trailing spaces are kept. Matching is byte by byte, since names need not be
//! UTF-8: `?` matches one byte, and classes accept only ASCII so that they never match half of a character.
//! Patterns that git would silently never match (`a//b`, `[z-a]`, an unterminated `[`) are errors here, because
//! a backup that quietly includes what the user meant to exclude is worse than a refusal to start.

/// Longer patterns are refused: no sensible exclude needs them, and matching cost grows with length.
const MAX_PATTERN_LEN: usize = 4096;

/// A pattern that cannot be used: names the pattern and why.
#[derive(Debug, thiserror::Error)]
#[error("exclude pattern {pattern:?}: {why}")]
pub struct ExcludeError {
    pub pattern: String,
    pub why: String,
}

/// Compiled exclude patterns, in the order given (later patterns override earlier ones).
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone)]
struct Pattern {
    negated: bool,
    dir_only: bool,
    matcher: Matcher,
}

#[derive(Debug, Clone)]
enum Matcher {
    /// No `/` in the pattern: matches the last component only, whatever the depth.
    Name(Vec<Tok>),
    /// Anchored at the source root: matches the whole path, component by component.
    Path(Vec<Comp>),
}

/// One component of an anchored pattern.
#[derive(Debug, Clone, PartialEq)]
enum Comp {
    Glob(Vec<Tok>),
    /// `**`: zero or more whole components.
    AnyComponents,
}

/// One element of a glob within a component (never `/`: patterns are split into components first).
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Byte(u8),
    AnyByte,
    Star,
    Class(ByteSet),
}

/// A set of bytes, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct ByteSet([u64; 4]);

impl ByteSet {
    fn insert(&mut self, b: u8) {
        self.0[usize::from(b >> 6)] |= 1 << (b & 63);
    }

    fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }

    fn complement(self) -> ByteSet {
        ByteSet(self.0.map(|w| !w))
    }
}

impl Excludes {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Self, ExcludeError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                let p = p.as_ref();
                Pattern::parse(p).map_err(|why| ExcludeError {
                    pattern: p.to_string(),
                    why,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Excludes { patterns })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether the entry at `rel` (relative to the backup source root, components separated by '/', no leading
    /// or trailing '/', raw bytes: names need not be UTF-8) is excluded. `is_dir`: it is a directory.
    /// The walker does not descend into excluded directories, so (as in git) a negated pattern cannot re-include
    /// something below an excluded directory; callers ask about parents first.
    ///
    /// Only the entry itself is tested, not its parents: with `**/cache/**`, `x/cache` is *not* excluded (as in
    /// gitignore, a trailing `/**` matches what is inside, not the directory), while everything in it is.
    pub fn excludes(&self, rel: &[u8], is_dir: bool) -> bool {
        if rel.is_empty() || self.patterns.is_empty() {
            return false;
        }
        let parts: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
        // Last match wins, so the first match from the end decides.
        self.patterns
            .iter()
            .rev()
            .find(|p| p.matches(&parts, is_dir))
            .is_some_and(|p| !p.negated)
    }
}

impl Pattern {
    fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty pattern".into());
        }
        if text.len() > MAX_PATTERN_LEN {
            return Err(format!("longer than {MAX_PATTERN_LEN} bytes"));
        }
        let (negated, body) = match text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if body.is_empty() {
            return Err("'!' negates nothing".into());
        }
        let mut comps = split_components(body.as_bytes())?;
        // Leading and trailing separators show up as empty first and last components.
        let rooted = comps.len() > 1 && comps.first().is_some_and(Vec::is_empty);
        if rooted {
            comps.remove(0);
        }
        let dir_only = comps.len() > 1 && comps.last().is_some_and(Vec::is_empty);
        if dir_only {
            comps.pop();
        }
        if comps.iter().all(Vec::is_empty) {
            return Err("no name to match, only '/'".into());
        }
        if comps.iter().any(Vec::is_empty) {
            return Err("empty path component ('//'), which no path has".into());
        }
        let mut comps: Vec<Comp> = comps.into_iter().map(compile_component).collect();
        let matcher = match comps.as_slice() {
            [Comp::Glob(name)] if !rooted => Matcher::Name(name.clone()),
            _ => {
                // `a/**/**/b` is `a/**/b`.
                comps.dedup_by(|a, b| *a == Comp::AnyComponents && *b == Comp::AnyComponents);
                // A trailing `**` matches what is inside, so at least one component: `a/**` is `a/*/**`.
                if comps.last() == Some(&Comp::AnyComponents) {
                    comps.insert(comps.len() - 1, Comp::Glob(vec![Tok::Star]));
                }
                Matcher::Path(comps)
            }
        };
        Ok(Pattern {
            negated,
            dir_only,
            matcher,
        })
    }

    fn matches(&self, parts: &[&[u8]], is_dir: bool) -> bool {
        if self.dir_only && !is_dir {
            return false;
        }
        match &self.matcher {
            Matcher::Name(glob) => parts.last().is_some_and(|name| match_glob(glob, name)),
            Matcher::Path(comps) => star_match(
                comps,
                parts,
                |c| *c == Comp::AnyComponents,
                |c, part| matches!(c, Comp::Glob(glob) if match_glob(glob, part)),
            ),
        }
    }
}

/// Splits a pattern into the globs of its '/'-separated components (empty ones included, for the caller to
/// interpret), resolving escapes and classes.
fn split_components(pat: &[u8]) -> Result<Vec<Vec<Tok>>, String> {
    let mut comps = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while i < pat.len() {
        // `None` stands for a separator.
        let (tok, next) = match pat[i] {
            b'\\' => {
                let b = *pat.get(i + 1).ok_or("trailing '\\' escapes nothing")?;
                // Names cannot contain '/', so an escaped one can only mean the separator.
                ((b != b'/').then_some(Tok::Byte(b)), i + 2)
            }
            b'/' => (None, i + 1),
            b'*' => (Some(Tok::Star), i + 1),
            b'?' => (Some(Tok::AnyByte), i + 1),
            b'[' => {
                let (set, next) = parse_class(pat, i)?;
                (Some(Tok::Class(set)), next)
            }
            b => (Some(Tok::Byte(b)), i + 1),
        };
        match tok {
            Some(tok) => current.push(tok),
            None => comps.push(std::mem::take(&mut current)),
        }
        i = next;
    }
    comps.push(current);
    Ok(comps)
}

/// A component of two or more unescaped stars only is `**` (as in git, `***` counts too); elsewhere runs of
/// stars are one `*`, which also keeps the glob match from revisiting the same positions.
fn compile_component(mut toks: Vec<Tok>) -> Comp {
    if toks.len() >= 2 && toks.iter().all(|t| *t == Tok::Star) {
        return Comp::AnyComponents;
    }
    toks.dedup_by(|a, b| *a == Tok::Star && *b == Tok::Star);
    Comp::Glob(toks)
}

/// Parses the class opening at `pat[open]` (a `[`): returns its set and the index just past its `]`.
fn parse_class(pat: &[u8], open: usize) -> Result<(ByteSet, usize), String> {
    let mut i = open + 1;
    let negated = matches!(pat.get(i), Some(b'!' | b'^'));
    if negated {
        i += 1;
    }
    let mut set = ByteSet::default();
    let mut first = true;
    loop {
        // A ']' right after the opening (and its negation) is a member, as in fnmatch.
        if pat.get(i) == Some(&b']') && !first {
            return Ok((if negated { set.complement() } else { set }, i + 1));
        }
        first = false;
        if pat.get(i) == Some(&b'[') && pat.get(i + 1) == Some(&b':') {
            if let Some(len) = pat[i + 2..].windows(2).position(|w| w == b":]") {
                add_named_class(&mut set, &pat[i + 2..i + 2 + len])?;
                i += 2 + len + 2;
                continue;
            }
        }
        let (lo, next) = class_byte(pat, i)?;
        let is_range =
            pat.get(next) == Some(&b'-') && !matches!(pat.get(next + 1), None | Some(b']'));
        if !is_range {
            set.insert(lo);
            i = next;
            continue;
        }
        let (hi, next) = class_byte(pat, next + 1)?;
        if hi < lo {
            return Err(format!(
                "range {}-{} in '[...]' is reversed and matches nothing",
                char::from(lo),
                char::from(hi)
            ));
        }
        (lo..=hi).for_each(|b| set.insert(b));
        i = next;
    }
}

/// One member byte of a class at `pat[i]`, unescaped: returns it and the index after it.
fn class_byte(pat: &[u8], i: usize) -> Result<(u8, usize), String> {
    let (b, next) = match pat.get(i) {
        Some(b'\\') => (pat.get(i + 1).copied(), i + 2),
        b => (b.copied(), i + 1),
    };
    match b {
        // A class never matches '/', so one that reaches a '/' was meant to end before it.
        None | Some(b'/') => Err(
            "unterminated '[' (a class must end with ']' before any '/'; write \\[ for a literal '[')"
                .into(),
        ),
        Some(b) if !b.is_ascii() => {
            Err("non-ASCII character in '[...]': classes match single bytes".into())
        }
        Some(b) => Ok((b, next)),
    }
}

/// Adds a POSIX class such as `[:digit:]` (ASCII meanings, as in the C locale).
fn add_named_class(set: &mut ByteSet, name: &[u8]) -> Result<(), String> {
    let test: fn(u8) -> bool = match name {
        b"alnum" => |b| b.is_ascii_alphanumeric(),
        b"alpha" => |b| b.is_ascii_alphabetic(),
        b"blank" => |b| b == b' ' || b == b'\t',
        b"cntrl" => |b| b.is_ascii_control(),
        b"digit" => |b| b.is_ascii_digit(),
        b"graph" => |b| b.is_ascii_graphic(),
        b"lower" => |b| b.is_ascii_lowercase(),
        b"print" => |b| b.is_ascii_graphic() || b == b' ',
        b"punct" => |b| b.is_ascii_punctuation(),
        // C's isspace includes the vertical tab, which is_ascii_whitespace leaves out.
        b"space" => |b| matches!(b, b' ' | b'\t'..=b'\r'),
        b"upper" => |b| b.is_ascii_uppercase(),
        b"xdigit" => |b| b.is_ascii_hexdigit(),
        _ => {
            let name = String::from_utf8_lossy(name);
            return Err(format!("unknown character class [:{name}:]"));
        }
    };
    (0..=u8::MAX)
        .filter(|&b| test(b))
        .for_each(|b| set.insert(b));
    Ok(())
}

/// Whether one component name matches a glob (a '/' cannot occur in either).
fn match_glob(glob: &[Tok], name: &[u8]) -> bool {
    star_match(
        glob,
        name,
        |t| *t == Tok::Star,
        |t, &b| match t {
            Tok::Byte(c) => *c == b,
            Tok::AnyByte => true,
            Tok::Class(set) => set.contains(b),
            Tok::Star => false,
        },
    )
}

/// Wildcard matching of `pat` against all of `text`, where a star element matches any run of text units
/// (possibly none) and every other element matches exactly one unit when `unit` says so.
///
/// This is the classic two-pointer algorithm: on a mismatch, only the most recent star takes one more unit and
/// matching resumes after it. Earlier stars never need to be revisited (whatever they would absorb, the latest
/// star can absorb instead), so the cost is O(pattern × text) rather than exponential. It is used twice: on
/// bytes within a component (`*`), and on components within a path (`**`).
fn star_match<P, T>(
    pat: &[P],
    text: &[T],
    is_star: impl Fn(&P) -> bool,
    unit: impl Fn(&P, &T) -> bool,
) -> bool {
    let (mut p, mut t) = (0, 0);
    // After the latest star: where the pattern resumes, and where the text resumed last time.
    let mut resume: Option<(usize, usize)> = None;
    loop {
        match pat.get(p) {
            Some(el) if is_star(el) => {
                resume = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(el) if t < text.len() && unit(el, &text[t]) => {
                p += 1;
                t += 1;
                continue;
            }
            None if t == text.len() => return true,
            _ => {}
        }
        match resume {
            Some((rp, rt)) if rt < text.len() => {
                resume = Some((rp, rt + 1));
                p = rp;
                t = rt + 1;
            }
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn ex(patterns: &[&str]) -> Excludes {
        match Excludes::new(patterns) {
            Ok(e) => e,
            Err(e) => panic!("{e}"),
        }
    }

    fn file(e: &Excludes, rel: &str) -> bool {
        e.excludes(rel.as_bytes(), false)
    }

    fn dir(e: &Excludes, rel: &str) -> bool {
        e.excludes(rel.as_bytes(), true)
    }

    fn error(pattern: &str) -> ExcludeError {
        match Excludes::new(&[pattern]) {
            Ok(e) => panic!("{pattern:?} accepted: {e:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn empty_set_excludes_nothing() {
        let e = Excludes::default();
        assert!(e.is_empty());
        assert!(!file(&e, "a"));
        let none: [String; 0] = [];
        assert!(Excludes::new(&none).map(|e| e.is_empty()).unwrap_or(false));
        assert!(!ex(&["a"]).is_empty());
    }

    #[test]
    fn accepts_owned_strings() {
        let e = Excludes::new(&[String::from("*.tmp")]);
        assert!(e.is_ok_and(|e| file(&e, "x/y.tmp")));
    }

    #[test]
    fn empty_path_is_never_excluded() {
        assert!(!dir(&ex(&["**", "*"]), ""));
    }

    #[test]
    fn middle_slash_anchors_at_root() {
        let e = ex(&["admin/backup"]);
        assert!(dir(&e, "admin/backup"));
        assert!(file(&e, "admin/backup"));
        assert!(!dir(&e, "x/admin/backup"));
        assert!(!dir(&e, "admin"));
        assert!(
            !file(&e, "admin/backup/f"),
            "children are excluded by not descending"
        );
    }

    #[test]
    fn leading_slash_anchors_at_root() {
        let e = ex(&["/foo"]);
        assert!(file(&e, "foo"));
        assert!(!file(&e, "a/foo"));
        let e = ex(&["/*.c"]);
        assert!(file(&e, "cat-file.c"));
        assert!(!file(&e, "mozilla-sha1/sha1.c"));
    }

    #[test]
    fn name_pattern_matches_at_any_depth() {
        let e = ex(&["*.tmp"]);
        assert!(file(&e, "a.tmp"));
        assert!(file(&e, "a/b/c.tmp"));
        assert!(dir(&e, "a/d.tmp"));
        assert!(!file(&e, "a.tmp/b"));
        assert!(!file(&e, "a.tmpx"));
        let e = ex(&["foo"]);
        assert!(file(&e, "foo") && file(&e, "a/foo") && dir(&e, "a/b/foo"));
        assert!(!file(&e, "foox") && !file(&e, "xfoo") && !file(&e, "foo/x"));
    }

    #[test]
    fn star_and_question_stay_within_a_component() {
        let e = ex(&["a*b", "/c?d", "e/*"]);
        assert!(file(&e, "ab") && file(&e, "axxb") && file(&e, "z/axb"));
        assert!(!file(&e, "ax/yb"));
        assert!(file(&e, "cxd"));
        assert!(!file(&e, "c/d") && !file(&e, "cd") && !file(&e, "cxxd"));
        assert!(file(&e, "e/x") && dir(&e, "e/y"));
        assert!(!file(&e, "e/x/y") && !dir(&e, "e"));
        let e = ex(&["foo/*"]);
        assert!(file(&e, "foo/test.json") && dir(&e, "foo/bar"));
        assert!(!file(&e, "foo/bar/hello.c"));
    }

    #[test]
    fn star_matches_dot_names_and_empty_runs() {
        let e = ex(&["*", "!x*y"]);
        assert!(file(&e, ".hidden") && dir(&e, "a/.git"));
        assert!(!file(&e, "xy") && !file(&e, "x.y") && !file(&e, "d/xzy"));
    }

    #[test]
    fn trailing_slash_matches_directories_only() {
        let e = ex(&["build/"]);
        assert!(dir(&e, "build") && dir(&e, "a/b/build"));
        assert!(!file(&e, "build") && !file(&e, "a/build"));
        let e = ex(&["doc/frotz/"]);
        assert!(dir(&e, "doc/frotz"));
        assert!(!file(&e, "doc/frotz") && !dir(&e, "a/doc/frotz"));
    }

    #[test]
    fn last_matching_pattern_wins() {
        let e = ex(&["*.log", "!keep.log"]);
        assert!(file(&e, "a.log") && !file(&e, "keep.log") && !file(&e, "d/keep.log"));
        let e = ex(&["!keep.log", "*.log"]);
        assert!(file(&e, "keep.log"));
        let e = ex(&["*.log", "!keep*.log", "keep-not.log"]);
        assert!(file(&e, "keep-not.log") && !file(&e, "keep-this.log"));
        let e = ex(&["!a"]);
        assert!(!file(&e, "a"), "a lone negation excludes nothing");
    }

    #[test]
    fn negation_combines_with_dir_only() {
        let e = ex(&["build", "!build/"]);
        assert!(file(&e, "build"));
        assert!(!dir(&e, "build"));
        let e = ex(&["/tmp/*", "!/tmp/keep/"]);
        assert!(file(&e, "tmp/x") && file(&e, "tmp/keep") && !dir(&e, "tmp/keep"));
    }

    #[test]
    fn leading_double_star_matches_in_all_directories() {
        let e = ex(&["**/foo"]);
        assert!(file(&e, "foo") && file(&e, "a/foo") && file(&e, "a/b/foo"));
        assert!(!file(&e, "foo/a") && !file(&e, "afoo"));
        let e = ex(&["**/foo/bar"]);
        assert!(file(&e, "foo/bar") && file(&e, "x/foo/bar") && file(&e, "x/y/foo/bar"));
        assert!(!file(&e, "foo/x/bar") && !file(&e, "foo/bar/x"));
    }

    #[test]
    fn trailing_double_star_matches_inside_only() {
        let e = ex(&["abc/**"]);
        assert!(file(&e, "abc/x") && dir(&e, "abc/x") && file(&e, "abc/x/y/z"));
        assert!(!dir(&e, "abc") && !file(&e, "x/abc/y"));
        let e = ex(&["abc/**/"]);
        assert!(dir(&e, "abc/x/y") && !file(&e, "abc/x") && !dir(&e, "abc"));
    }

    #[test]
    fn cache_contents_but_not_cache_itself() {
        let e = ex(&["**/cache/**"]);
        assert!(!dir(&e, "cache") && !dir(&e, "x/cache") && !dir(&e, "x/y/cache"));
        assert!(file(&e, "cache/f") && file(&e, "x/cache/f") && dir(&e, "x/y/cache/d"));
        assert!(file(&e, "x/cache/d/e/f"));
        assert!(!file(&e, "x/cachex/f") && !file(&e, "x/cache"));
    }

    #[test]
    fn middle_double_star_matches_zero_or_more_directories() {
        let e = ex(&["a/**/b"]);
        assert!(file(&e, "a/b") && file(&e, "a/x/b") && file(&e, "a/x/y/b"));
        assert!(!file(&e, "a/xb") && !file(&e, "ab") && !file(&e, "x/a/b") && !file(&e, "a/b/c"));
        let e = ex(&["a/**/**/b", "c/**/d/**/e"]);
        assert!(file(&e, "a/b") && file(&e, "a/x/y/b"));
        assert!(file(&e, "c/d/e") && file(&e, "c/x/d/y/z/e") && file(&e, "c/d/d/e"));
        assert!(!file(&e, "c/e") && !file(&e, "c/d"));
    }

    #[test]
    fn double_star_alone_matches_everything() {
        for p in ["**", "/**", "***"] {
            let e = ex(&[p]);
            assert!(file(&e, "a") && dir(&e, "a/b") && file(&e, "a/b/.c"), "{p}");
        }
    }

    #[test]
    fn double_star_inside_a_component_is_a_star() {
        let e = ex(&["a**b", "/x/**y"]);
        assert!(file(&e, "ab") && file(&e, "aqqb") && file(&e, "d/ab"));
        assert!(!file(&e, "a/b") && !file(&e, "aq/qb"));
        assert!(file(&e, "x/y") && file(&e, "x/zzy"));
        assert!(!file(&e, "x/z/y"));
    }

    #[test]
    fn byte_classes() {
        let e = ex(&["[abc]1", "[a-c]2", "[!a-c]3", "[^a-c]4", "[a-cx-z]5"]);
        assert!(file(&e, "a1") && file(&e, "c1") && !file(&e, "d1") && !file(&e, "ab1"));
        assert!(file(&e, "b2") && !file(&e, "d2"));
        assert!(file(&e, "d3") && !file(&e, "b3") && !file(&e, "3"));
        assert!(file(&e, "d4") && !file(&e, "a4"));
        assert!(file(&e, "y5") && file(&e, "a5") && !file(&e, "m5"));
    }

    #[test]
    fn class_edge_cases() {
        let e = ex(&[
            "[]]1",
            "[!]]2",
            "[a-]3",
            "[-a]4",
            "[\\]x]5",
            "[[:digit:]]6",
            "[![:alpha:]_]7",
        ]);
        assert!(file(&e, "]1") && !file(&e, "a1"));
        assert!(file(&e, "a2") && !file(&e, "]2"));
        assert!(file(&e, "-3") && file(&e, "a3") && !file(&e, "b3"));
        assert!(file(&e, "-4") && file(&e, "a4"));
        assert!(file(&e, "]5") && file(&e, "x5") && !file(&e, "\\5"));
        assert!(file(&e, "76") && !file(&e, "x6") && !file(&e, "7"));
        assert!(file(&e, "17") && !file(&e, "q7") && !file(&e, "_7"));
        let e = ex(&["[[:space:][:upper:]]x"]);
        assert!(file(&e, " x") && file(&e, "\x0bx") && file(&e, "Qx") && !file(&e, "qx"));
    }

    #[test]
    fn backslash_escapes() {
        let e = ex(&["\\*", "a\\?", "\\[b]", "\\!c", "\\#d", "e\\\\"]);
        assert!(file(&e, "*") && !file(&e, "x"));
        assert!(file(&e, "a?") && !file(&e, "ab"));
        assert!(file(&e, "[b]") && !file(&e, "b"));
        assert!(file(&e, "!c") && !file(&e, "c"));
        assert!(file(&e, "#d"));
        assert!(file(&e, "e\\"));
        let e = ex(&["x\\*y", "p\\/q"]);
        assert!(file(&e, "x*y") && file(&e, "d/x*y") && !file(&e, "xzy"));
        assert!(
            file(&e, "p/q") && !file(&e, "d/p/q"),
            "an escaped '/' still separates"
        );
        let e = ex(&["\\*\\*/x"]);
        assert!(file(&e, "**/x") && !file(&e, "x") && !file(&e, "a/x"));
    }

    #[test]
    fn hash_and_spaces_are_literal() {
        let e = ex(&["#x", "y "]);
        assert!(file(&e, "#x") && file(&e, "y ") && !file(&e, "y"));
    }

    #[test]
    fn non_utf8_names() {
        let e = ex(&["*.tmp", "/d?r/x", "[!a]z"]);
        assert!(e.excludes(b"caf\xe9.tmp", false));
        assert!(e.excludes(b"\xff\xfe/sub/\x80.tmp", false));
        assert!(e.excludes(b"d\xffr/x", false));
        assert!(!e.excludes(b"d\xff\xfer/x", false), "'?' is one byte");
        assert!(e.excludes(b"\xffz", false));
        assert!(!e.excludes(b"\xff\xe9", false));
    }

    #[test]
    fn non_ascii_pattern_matches_its_bytes() {
        let e = ex(&["café*"]);
        assert!(e.excludes("x/café.txt".as_bytes(), false));
        assert!(!e.excludes(b"cafe.txt", false));
    }

    #[test]
    fn errors_name_the_pattern_and_reason() {
        let e = error("[abc");
        assert_eq!(e.pattern, "[abc");
        assert!(e.why.contains("unterminated"), "{e}");
        assert!(
            e.to_string()
                .starts_with("exclude pattern \"[abc\": unterminated"),
            "{e}"
        );
        assert_eq!(error("").why, "empty pattern");
        let e = Excludes::new(&["ok", "", "also-ok"]);
        assert!(
            e.is_err_and(|e| e.pattern.is_empty()),
            "the bad one among good ones"
        );
    }

    #[test]
    fn unusable_patterns_are_errors() {
        for p in ["/", "!/", "//", "!"] {
            let e = error(p);
            assert!(e.why.contains('/') || e.why.contains('!'), "{p}: {e}");
        }
        assert!(error("a//b").why.contains("empty path component"));
        assert!(error("a/[b/c]").why.contains("unterminated"));
        assert!(error("[").why.contains("unterminated"));
        assert!(error("[]").why.contains("unterminated"));
        assert!(error("[!").why.contains("unterminated"));
        assert!(error("[a\\").why.contains("unterminated"));
        assert!(error("foo\\").why.contains("trailing '\\'"));
        assert!(error("[z-a]").why.contains("reversed"));
        assert!(error("[[:nope:]]").why.contains("[:nope:]"));
        assert!(error("[é]").why.contains("non-ASCII"));
    }

    #[test]
    fn pattern_length_is_bounded() {
        let ok = "a".repeat(MAX_PATTERN_LEN);
        assert!(Excludes::new(&[ok.as_str()]).is_ok_and(|e| file(&e, &ok)));
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        assert!(error(&long).why.contains("4096"));
    }

    #[test]
    fn pathological_globs_finish_fast() {
        let start = Instant::now();
        let text = "a".repeat(100_000);
        let e = ex(&["*a*a*a*a*a*a*b", "**/*a*a*a*a*a*a*c*"]);
        assert!(!file(&e, &text));
        assert!(file(&e, &format!("{text}b")));
        let deep = ["a"; 2_000].join("/");
        let e = ex(&["**/a/**/a/**/a/**/a/**/a/**/b", "a/**/a/**/a/**/a/**/c/**"]);
        assert!(!file(&e, &deep) && !dir(&e, &deep));
        assert!(file(&e, &format!("{deep}/b")));
        assert!(file(&e, &format!("{deep}/c/a")));
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn star_match_is_wildcard_matching() {
        let m = |p: &str, t: &str| {
            star_match(
                p.as_bytes(),
                t.as_bytes(),
                |&c| c == b'*',
                |&c, &b| c == b'?' || c == b,
            )
        };
        assert!(m("", "") && m("*", "") && m("*", "abc") && m("a*", "a") && m("*c", "abc"));
        assert!(m("a*b*c", "aXbYbZc") && m("?*?", "ab") && m("*ab", "aab"));
        assert!(
            !m("", "a") && !m("a", "") && !m("?*?", "a") && !m("a*b", "ba") && !m("*ab", "aba")
        );
    }
}
