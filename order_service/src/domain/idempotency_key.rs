/// The client's name for one order it places, sent in the `Idempotency-Key` header of
/// `POST /orders`: a retried request with the same key (and customer) answers the order placed
/// the first time instead of placing another.
///
/// 1 to 255 printable ASCII characters, spaces inside included (a UUID is a good key). The
/// header may carry it bare or as a quoted string (`"8e03978e-..."`, the form of the IETF draft
/// "The Idempotency-Key HTTP Header Field"); the quotes are not part of the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const HEADER: &'static str = "Idempotency-Key";
    pub const MAX_LENGTH: usize = 255;
    /// Exactly what [`IdempotencyKey::parse`] takes: 1 to 255 printable ASCII characters but
    /// quotes and backslashes, spaces only inside, bare or between quotes.
    pub const PATTERN: &'static str = r#"^([!#-\[\]-~]([ !#-\[\]-~]{0,253}[!#-\[\]-~])?|"[!#-\[\]-~]([ !#-\[\]-~]{0,253}[!#-\[\]-~])?")$"#;

    /// `value` as the header's bytes.
    pub fn parse(value: &[u8]) -> Result<Self, String> {
        if !value.iter().all(|byte| (0x20..0x7f).contains(byte)) {
            return Err("must be printable ASCII characters".into());
        }
        // Checked above: every byte is ASCII.
        let text = String::from_utf8_lossy(value);
        let text = text.trim();
        let key = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(quoted) => quoted,
            None => text,
        };
        if key.is_empty() {
            Err("must not be empty".into())
        } else if key.len() > Self::MAX_LENGTH {
            Err(format!(
                "must be at most {} characters, got {}",
                Self::MAX_LENGTH,
                key.len()
            ))
        } else if key.contains('"') || key.contains('\\') {
            Err("must not contain quotes or backslashes".into())
        } else if key.starts_with(' ') || key.ends_with(' ') {
            Err("must not begin or end with a space".into())
        } else {
            Ok(Self(key.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_taken_bare_or_quoted() {
        let key = "8e03978e-40d5-43e8-bc93-6894a57f9324";
        assert_eq!(IdempotencyKey::parse(key.as_bytes()).unwrap().as_str(), key);
        let quoted = format!("\"{key}\"");
        assert_eq!(
            IdempotencyKey::parse(quoted.as_bytes()).unwrap().as_str(),
            key
        );
        assert_eq!(
            IdempotencyKey::parse(b"order 42 of batch 7")
                .unwrap()
                .as_str(),
            "order 42 of batch 7"
        );
    }

    #[test]
    fn empty_long_or_non_ascii_keys_are_refused() {
        for (value, message) in [
            (b"".to_vec(), "must not be empty"),
            (b"  ".to_vec(), "must not be empty"),
            (b"\"\"".to_vec(), "must not be empty"),
            (vec![b'k'; 256], "must be at most 255 characters, got 256"),
            (
                "clé".as_bytes().to_vec(),
                "must be printable ASCII characters",
            ),
            (b"a\tb".to_vec(), "must be printable ASCII characters"),
            (b"a\"b".to_vec(), "must not contain quotes or backslashes"),
        ] {
            assert_eq!(
                IdempotencyKey::parse(&value),
                Err(message.into()),
                "{value:?}"
            );
        }
        assert!(IdempotencyKey::parse(&[b'k'; 255]).is_ok());
    }
}
