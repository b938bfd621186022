use std::str::FromStr;

use rust_decimal::Decimal;

/// Who ordered: 1 to 64 characters, not blank, NFC-normalised, without control or invisible
/// characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CustomerId(String);

/// What was ordered: under the same rules as [`CustomerId`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProductId(String);

/// An identifier people can read and cannot spoof: normalised to NFC (so that "é" typed as one
/// character or as "e" + accent is one identifier), then refused if blank, longer than 64
/// characters, or holding a control character or a format character (Unicode category Cf:
/// zero-width spaces and joiners, direction overrides and isolates, the byte-order mark), which
/// would make two identifiers that look alike differ, or one look like another.
fn parse_identifier(value: &str) -> Result<String, String> {
    use icu_normalizer::ComposingNormalizerBorrowed;
    use icu_properties::CodePointMapData;
    use icu_properties::props::GeneralCategory;
    let value = ComposingNormalizerBorrowed::new_nfc().normalize(value);
    let length = value.chars().count();
    let invisible = value
        .chars()
        .find(|&c| CodePointMapData::<GeneralCategory>::new().get(c) == GeneralCategory::Format);
    if value.trim().is_empty() {
        Err("must not be empty or blank".into())
    } else if length > 64 {
        Err(format!("must be at most 64 characters, got {length}"))
    } else if value.chars().any(char::is_control) {
        Err("must not contain control characters".into())
    } else if let Some(c) = invisible {
        Err(format!(
            "must not contain invisible or direction-changing characters, found U+{:04X}",
            u32::from(c)
        ))
    } else {
        Ok(value.into_owned())
    }
}

/// A regular expression (ECMA-262 and Python alike) for the characters [`parse_identifier`]
/// takes: at least one that is not white space, none that is a control or format character. The
/// ranges come from the same Unicode data as the check. (The length, 1 to 64 characters once
/// normalised, is the schema's `minLength` and `maxLength`.)
pub fn identifier_pattern() -> String {
    use icu_properties::CodePointMapData;
    use icu_properties::props::GeneralCategory;
    let categories = CodePointMapData::<GeneralCategory>::new();
    let mut refused = String::new();
    for category in [GeneralCategory::Control, GeneralCategory::Format] {
        for range in categories.iter_ranges_for_value(category) {
            let (start, end) = (*range.start(), *range.end());
            refused.push_str(&pattern_char(start));
            if end > start {
                refused.push('-');
                refused.push_str(&pattern_char(end));
            }
        }
    }
    format!("^[^{refused}]*[^{refused}\\s][^{refused}]*$")
}

/// A code point in a character class: `\uXXXX` in the Basic Multilingual Plane, which both
/// dialects read; the character itself beyond, which both read with Unicode semantics.
fn pattern_char(code_point: u32) -> String {
    match char::from_u32(code_point) {
        Some(c) if code_point > 0xFFFF => c.to_string(),
        _ => format!("\\u{code_point:04X}"),
    }
}

impl CustomerId {
    pub fn parse(value: &str) -> Result<Self, String> {
        parse_identifier(value).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl ProductId {
    pub fn parse(value: &str) -> Result<Self, String> {
        parse_identifier(value).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How many: 1 to 10,000.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 10_000;

    pub fn parse(value: i64) -> Result<Self, String> {
        match u32::try_from(value) {
            Ok(quantity) if (1..=Self::MAX).contains(&quantity) => Ok(Self(quantity)),
            _ => Err(format!("must be between 1 and {}, got {value}", Self::MAX)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A unit price: exact, 0 to 1,000,000, at most 2 decimal places once trailing zeros are dropped
/// (`10.500` is 10.50, `10.501` is refused). Always held with scale 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Price(Decimal);

impl Price {
    pub const MAX: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

    /// Parses the JSON text of a price: a number (`10.50`, `1.05e1`) or a string of plain
    /// digits (`"10.50"`: no sign, exponent, spaces or leading zeros), exactly.
    pub fn parse_json(raw: &str) -> Result<Self, String> {
        if raw.starts_with('"') {
            let text = serde_json::from_str::<String>(raw)
                .map_err(|_| "must be a decimal number".to_owned())?;
            if !is_plain_decimal(&text) {
                return Err(format!(
                    "must be a decimal number of plain digits (like \"10.50\"), got {text:?}"
                ));
            }
            Self::parse(&text)
        } else {
            Self::parse(raw)
        }
    }

    /// Parses a JSON number's text exactly: never rounded, whatever its number of digits.
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("must be a decimal number, got {text:?}");
        // No price with at most 2 decimals and at most 1,000,000 has more digits than the
        // decimal type holds: refused rather than rounded.
        if significant_digits(text) > 28 {
            return Err("must have at most 2 decimal places and be at most 1000000".into());
        }
        let value = if text.contains(['e', 'E']) {
            Decimal::from_scientific(text).map_err(|_| invalid())?
        } else {
            Decimal::from_str(text).map_err(|_| invalid())?
        };
        let mut value = value.normalize();
        if value.is_sign_negative() && !value.is_zero() {
            return Err("must be greater than or equal to 0".into());
        }
        if value.scale() > 2 {
            return Err("must have at most 2 decimal places".into());
        }
        if value > Self::MAX {
            return Err(format!("must be at most {}", Self::MAX));
        }
        value.set_sign_positive(true);
        value.rescale(2);
        Ok(Self(value))
    }

    /// The pattern of a price given as a string, exactly what [`Price::parse_json`] takes:
    /// 0 to 1,000,000, at most 2 decimal places once trailing zeros are dropped.
    pub const STRING_PATTERN: &'static str =
        r"^(0|[1-9][0-9]{0,5})(\.[0-9]{1,2}0*)?$|^1000000(\.0+)?$";

    pub fn get(self) -> Decimal {
        self.0
    }
}

/// `0` or digits without a leading zero, then optionally `.` and digits.
fn is_plain_decimal(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && (whole == "0" || !whole.starts_with('0')) && fraction.is_none_or(digits)
}

/// The significant digits of a JSON number's mantissa: without sign, leading zeros, or trailing
/// zeros of its fraction. Past 28, the decimal type would round.
pub fn significant_digits(number: &str) -> usize {
    let mantissa = number.split(['e', 'E']).next().unwrap_or_default();
    let mantissa = if mantissa.contains('.') {
        mantissa.trim_end_matches('0')
    } else {
        mantissa
    };
    mantissa
        .trim_start_matches(['-', '+'])
        .trim_start_matches(['0', '.'])
        .bytes()
        .filter(u8::is_ascii_digit)
        .count()
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrderLine {
    pub product_id: ProductId,
    pub quantity: Quantity,
    pub price: Price,
}

/// A valid order, not yet stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOrder {
    customer_id: CustomerId,
    lines: Vec<NewOrderLine>,
}

impl NewOrder {
    pub const MAX_LINES: usize = 100;

    /// Checks the number of lines (1 to 100).
    pub fn new(customer_id: CustomerId, lines: Vec<NewOrderLine>) -> Result<Self, String> {
        if lines.is_empty() || lines.len() > Self::MAX_LINES {
            return Err(format!(
                "must hold 1 to {} items, got {}",
                Self::MAX_LINES,
                lines.len()
            ));
        }
        Ok(Self { customer_id, lines })
    }

    pub fn customer_id(&self) -> &CustomerId {
        &self.customer_id
    }

    pub fn lines(&self) -> &[NewOrderLine] {
        &self.lines
    }

    /// Sum of quantity x price, exact, scale 2. Cannot overflow: at most
    /// 100 x 10,000 x 1,000,000 = 10^12.
    pub fn total(&self) -> Decimal {
        let mut total: Decimal = self
            .lines
            .iter()
            .map(|line| Decimal::from(line.quantity.get()) * line.price.get())
            .sum();
        total.rescale(2);
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_nfc_normalised_so_that_look_alikes_are_one() {
        let composed = CustomerId::parse("caf\u{e9}").unwrap();
        let decomposed = CustomerId::parse("cafe\u{301}").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(decomposed.as_str(), "caf\u{e9}");
    }

    #[test]
    fn invisible_and_direction_changing_characters_are_refused() {
        for sneaky in [
            "cust\u{200b}omer", // zero-width space
            "cust\u{200d}omer", // zero-width joiner
            "\u{202e}remotsuc", // right-to-left override
            "customer\u{2066}", // left-to-right isolate
            "\u{feff}customer", // byte-order mark
        ] {
            let refused = ProductId::parse(sneaky).unwrap_err();
            assert!(refused.contains("invisible"), "{sneaky:?}: {refused}");
        }
        assert!(CustomerId::parse("customer-123").is_ok());
        assert!(CustomerId::parse("Zoë Ångström 李").is_ok());
    }

    fn price(text: &str) -> Result<String, String> {
        Price::parse_json(text).map(|p| p.get().to_string())
    }

    #[test]
    fn prices_are_exact_and_scaled_to_cents() {
        assert_eq!(price("10.5"), Ok("10.50".into()));
        assert_eq!(price("\"10.50\""), Ok("10.50".into()));
        assert_eq!(price("10.500"), Ok("10.50".into()));
        assert_eq!(price("0"), Ok("0.00".into()));
        assert_eq!(price("1e2"), Ok("100.00".into()));
        assert_eq!(price("1000000"), Ok("1000000.00".into()));
    }

    #[test]
    fn prices_out_of_the_rules_are_refused() {
        assert!(price("10.501").unwrap_err().contains("2 decimal places"));
        // Beyond f64 precision: still refused, because the text is parsed exactly.
        assert!(price("10.500000000000000000001").is_err());
        assert!(price("-0.01").unwrap_err().contains(">= 0") || price("-0.01").is_err());
        assert!(price("1000000.01").unwrap_err().contains("at most"));
        assert!(price("\"abc\"").is_err());
        assert!(price("\"\"").is_err());
        // Not rounded away, however many digits.
        assert!(price("10.50000000000000000000000000000001").is_err());
        assert_eq!(
            price("10.500000000000000000000000000000"),
            Ok("10.50".into())
        );
        // A string is plain digits.
        for text in [
            "\" 10.50\"",
            "\"+1\"",
            "\"1e2\"",
            "\"01\"",
            "\"1.\"",
            "\".5\"",
            "\"1_0\"",
        ] {
            assert!(price(text).is_err(), "{text}");
        }
    }

    #[test]
    fn quantities_are_bounded() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-1).is_err());
        assert!(Quantity::parse(10_001).is_err());
        assert_eq!(Quantity::parse(10_000).map(Quantity::get), Ok(10_000));
    }

    #[test]
    fn identifiers_are_bounded_in_characters() {
        assert!(CustomerId::parse("").is_err());
        assert!(CustomerId::parse("   ").is_err());
        assert!(CustomerId::parse(&"é".repeat(64)).is_ok());
        assert!(CustomerId::parse(&"a".repeat(65)).is_err());
        assert!(ProductId::parse("p\u{0}").is_err());
    }

    #[test]
    fn the_total_is_the_sum_of_quantity_times_price() {
        let line = |quantity, price: &str| NewOrderLine {
            product_id: ProductId::parse("p").unwrap(),
            quantity: Quantity::parse(quantity).unwrap(),
            price: Price::parse(price).unwrap(),
        };
        let order = NewOrder::new(
            CustomerId::parse("c").unwrap(),
            vec![line(2, "10.50"), line(3, "0.10")],
        )
        .unwrap();
        assert_eq!(order.total().to_string(), "21.30");
    }

    #[test]
    fn an_order_has_1_to_100_lines() {
        assert!(NewOrder::new(CustomerId::parse("c").unwrap(), vec![]).is_err());
    }
}
