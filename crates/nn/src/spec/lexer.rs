//! Tokens of the spec language, with positions counted in characters.

/// Longest token text quoted in an error message before it is shortened.
const QUOTE_LIMIT: usize = 40;

/// The kinds of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// An ASCII letter or `_`, then ASCII letters, digits and `_`.
    Ident,
    /// `[+-]digits[.digits][e[+-]digits]`, with a digit somewhere before the
    /// exponent.
    Number,
    LParen,
    RParen,
    Comma,
    Equals,
    /// `|`, between a residual block's body and shortcut.
    Bar,
    /// A letter or digit outside ASCII, which no name holds: a token of its
    /// own, covering the whole word it stands in, so that the parser reports
    /// the character rather than the ASCII part of the word before it
    /// (`linéar` is not the unknown layer `lin`).
    Foreign,
    /// Any other single character.
    Other,
    End,
}

/// A token: its kind and its character range in the input.
#[derive(Debug, Clone, Copy)]
pub(super) struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// A cursor over the characters of a spec; cheap to copy for look-ahead.
#[derive(Debug, Clone, Copy)]
pub(super) struct Lexer<'a> {
    chars: &'a [char],
    pos: usize,
}

impl<'a> Lexer<'a> {
    pub fn new(chars: &'a [char]) -> Self {
        Self { chars, pos: 0 }
    }

    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).copied()
    }

    fn digits_from(&self, mut i: usize) -> usize {
        while self.at(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
        i
    }

    /// The end of a number starting at `start`, if one starts there.
    fn number_end(&self, start: usize) -> Option<usize> {
        let mut i = start;
        if matches!(self.at(i), Some('+' | '-')) {
            i += 1;
        }
        let int_end = self.digits_from(i);
        let mut mantissa_digits = int_end - i;
        i = int_end;
        if self.at(i) == Some('.') {
            let frac_end = self.digits_from(i + 1);
            mantissa_digits += frac_end - (i + 1);
            if mantissa_digits > 0 {
                i = frac_end;
            }
        }
        if mantissa_digits == 0 {
            return None;
        }
        if matches!(self.at(i), Some('e' | 'E')) {
            let mut j = i + 1;
            if matches!(self.at(j), Some('+' | '-')) {
                j += 1;
            }
            let exp_end = self.digits_from(j);
            if exp_end > j {
                i = exp_end;
            }
        }
        Some(i)
    }

    /// The next token, skipping whitespace.
    pub fn next_token(&mut self) -> Token {
        while self.at(self.pos).is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(c) = self.at(start) else {
            return Token {
                kind: Kind::End,
                start,
                end: start,
            };
        };
        let (kind, end) = if starts_word(c) {
            let mut i = start + 1;
            while self.at(i).is_some_and(|c| c.is_alphanumeric() || c == '_') {
                i += 1;
            }
            (self.word_kind(start, i), i)
        } else if let Some(end) = self.number_end(start) {
            (Kind::Number, end)
        } else {
            let kind = match c {
                '(' => Kind::LParen,
                ')' => Kind::RParen,
                ',' => Kind::Comma,
                '=' => Kind::Equals,
                '|' => Kind::Bar,
                _ => Kind::Other,
            };
            (kind, start + 1)
        };
        self.pos = end;
        Token { kind, start, end }
    }

    /// [`Kind::Ident`] for an ASCII word, [`Kind::Foreign`] otherwise.
    fn word_kind(&self, start: usize, end: usize) -> Kind {
        if self.chars[start..end].iter().all(char::is_ascii) {
            Kind::Ident
        } else {
            Kind::Foreign
        }
    }

    /// The first character outside ASCII in `token` (for a [`Kind::Foreign`]
    /// token), with its position.
    pub fn foreign_char(&self, token: Token) -> Option<(usize, char)> {
        (token.start..token.end)
            .map(|i| (i, self.chars[i]))
            .find(|(_, c)| !c.is_ascii())
    }

    /// The token [`Lexer::next_token`] would return, without consuming it.
    pub fn peek(&self) -> Token {
        let mut copy = *self;
        copy.next_token()
    }

    /// The characters from `start` to `end`.
    pub fn slice(&self, start: usize, end: usize) -> String {
        self.chars
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .collect()
    }

    /// The token's text.
    pub fn text(&self, token: Token) -> String {
        self.slice(token.start, token.end)
    }

    /// The token as an error message shows it: quoted, or `end of input`.
    pub fn describe(&self, token: Token) -> String {
        if token.kind == Kind::End {
            "end of input".to_owned()
        } else {
            quote(&self.text(token))
        }
    }
}

/// Whether `c` starts a word: a name, or a run of letters and digits that
/// is meant as one but holds characters outside ASCII.
fn starts_word(c: char) -> bool {
    c == '_' || c.is_alphabetic() || (!c.is_ascii() && c.is_alphanumeric())
}

/// `text` in single quotes, with control and other invisible characters
/// escaped and long texts shortened, so that it fits on one line.
pub(super) fn quote(text: &str) -> String {
    format!("'{}'", shorten(text).escape_debug())
}

/// `text` cut to [`QUOTE_LIMIT`] characters, with `...` marking a cut.
pub(super) fn shorten(text: &str) -> String {
    if text.chars().count() <= QUOTE_LIMIT {
        text.to_owned()
    } else {
        let head: String = text.chars().take(QUOTE_LIMIT - 3).collect();
        format!("{head}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<(Kind, String)> {
        let chars: Vec<char> = s.chars().collect();
        let mut lx = Lexer::new(&chars);
        let mut out = Vec::new();
        loop {
            let t = lx.next_token();
            if t.kind == Kind::End {
                return out;
            }
            out.push((t.kind, lx.text(t)));
        }
    }

    #[test]
    fn numbers() {
        for n in [
            "1", "007", "1.5", ".5", "5.", "-0.1", "+2", "1e-3", "2.5E+10",
        ] {
            assert_eq!(kinds(n), vec![(Kind::Number, n.to_owned())], "{n}");
        }
        assert_eq!(
            kinds("1e"),
            vec![(Kind::Number, "1".into()), (Kind::Ident, "e".into())]
        );
        assert_eq!(
            kinds("-x"),
            vec![(Kind::Other, "-".into()), (Kind::Ident, "x".into())]
        );
        assert_eq!(kinds("."), vec![(Kind::Other, ".".into())]);
        assert_eq!(
            kinds("784x"),
            vec![(Kind::Number, "784".into()), (Kind::Ident, "x".into())]
        );
    }

    #[test]
    fn positions_count_characters() {
        let chars: Vec<char> = "ü ℓ(".chars().collect();
        let mut lx = Lexer::new(&chars);
        let t = lx.next_token();
        assert_eq!((t.kind, t.start, t.end), (Kind::Foreign, 0, 1));
        let t = lx.next_token();
        assert_eq!((t.kind, t.start), (Kind::Foreign, 2));
        let t = lx.next_token();
        assert_eq!((t.kind, t.start), (Kind::LParen, 3));
        assert_eq!(lx.next_token().start, 4);
    }

    #[test]
    fn words_with_foreign_letters_are_one_token() {
        assert_eq!(
            kinds("linéar(6٣"),
            vec![
                (Kind::Foreign, "linéar".into()),
                (Kind::LParen, "(".into()),
                (Kind::Number, "6".into()),
                (Kind::Foreign, "٣".into()),
            ]
        );
        let chars: Vec<char> = "relu_ñ2".chars().collect();
        let mut lx = Lexer::new(&chars);
        let t = lx.next_token();
        assert_eq!(lx.foreign_char(t), Some((5, 'ñ')));
    }

    #[test]
    fn quoting_stays_on_one_line() {
        assert_eq!(quote("\n"), "'\\n'");
        let long = "9".repeat(100);
        let q = quote(&long);
        assert!(q.ends_with("...'") && q.chars().count() == QUOTE_LIMIT + 2);
    }
}
