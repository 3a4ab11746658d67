//! RFC 8785 (JCS) canonical JSON, through `serde_json_canonicalizer`.
//!
//! The manifest signature covers these bytes, so every implementation must produce them
//! identically: keys sorted by UTF-16 code units, ECMAScript number formatting, minimal
//! string escaping. The crate is tested here against RFC 8785's own examples.

use serde_json::Value;

/// The JCS bytes of a JSON value this program built or already checked (see
/// [`try_canonical_bytes`] for anything that came from outside).
pub fn canonical_bytes(value: &Value) -> Vec<u8> {
    try_canonical_bytes(value).expect("a checked serde_json::Value canonicalises")
}

/// The JCS bytes of a JSON value, or why it has none. A dependency enables serde_json's
/// `arbitrary_precision`, so a parsed number such as `1e999` is kept as text, and JCS cannot
/// write a number outside the IEEE double range (found by the `release` fuzz target).
pub fn try_canonical_bytes(value: &Value) -> Result<Vec<u8>, String> {
    serde_json_canonicalizer::to_vec(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jcs(text: &str) -> String {
        String::from_utf8(canonical_bytes(&serde_json::from_str(text).unwrap())).unwrap()
    }

    /// RFC 8785 §3.2.2 example ("Sample Input" → "Canonical Output").
    #[test]
    fn rfc8785_sample() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let expected = r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#;
        assert_eq!(jcs(input), expected);
    }

    /// RFC 8785 §3.2.3: properties sorted by UTF-16 code units, not by UTF-8 bytes or code points.
    #[test]
    fn rfc8785_sorting() {
        let input = r#"{
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        let expected = "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}";
        assert_eq!(jcs(input), expected);
    }

    /// RFC 8785 Appendix B: IEEE 754 → ECMAScript number serialisation samples.
    #[test]
    fn rfc8785_numbers() {
        let cases = [
            ("0", "0"),
            ("-0", "0"),
            ("1.0", "1"),
            ("9007199254740992", "9007199254740992"),
            ("-9007199254740992", "-9007199254740992"),
            ("1e21", "1e+21"),
            ("999999999999999900000", "999999999999999900000"),
            ("0.000001", "0.000001"),
            ("0.0000001", "1e-7"),
            ("295147905179352830000", "295147905179352830000"),
            ("5e-324", "5e-324"),
            ("1.7976931348623157e308", "1.7976931348623157e+308"),
        ];
        for (input, expected) in cases {
            assert_eq!(
                jcs(&format!("[{input}]")),
                format!("[{expected}]"),
                "{input}"
            );
        }
    }

    #[test]
    fn nested_objects_and_unicode_strings() {
        assert_eq!(
            jcs(r#"{"b":{"z":1,"a":[{"y":"é","x":"\u0000"}]},"a":"\ud834\udd1e"}"#),
            "{\"a\":\"𝄞\",\"b\":{\"a\":[{\"x\":\"\\u0000\",\"y\":\"é\"}],\"z\":1}}"
        );
    }
}
