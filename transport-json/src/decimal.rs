//! Decimal digits without the formatting machinery: the client's made-up `Uid`s and the
//! server's timestamps are written with it on every request.

/// `n` in decimal, written into `buf` without the formatting machinery.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut start = buf.len();
    loop {
        start -= 1;
        // `n % 10` is below 10, so the cast keeps it whole.
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written, so this never falls back.
    std::str::from_utf8(&buf[start..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::decimal;

    #[test]
    fn decimal_matches_to_string() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut buf = [0; 20];
            assert_eq!(decimal(n, &mut buf), n.to_string());
        }
    }
}
