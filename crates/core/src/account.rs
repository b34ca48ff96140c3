//! What an account may be given, checked the same way by the platform API and `hepdb-admin`:
//! each caller words the refusal for its own input (a JSON field, a flag).

/// The most slots an account can have.
pub const MAX_SLOTS: i32 = 100_000;
/// The largest storage quota, in MiB (about 95 TiB).
pub const MAX_STORAGE_MB: i64 = 100_000_000;
/// Characters in an account's name.
pub const MAX_NAME: usize = 100;
/// Characters in the platform's own id for an account.
pub const MAX_EXTERNAL_ID: usize = 255;

/// An entitlement out of bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfBounds {
    /// Slots outside `0..=MAX_SLOTS`.
    Slots,
    /// Storage outside `0..=MAX_STORAGE_MB`.
    StorageMb,
}

/// Checks the entitlements given (a create gives both, an update either).
pub fn check_entitlements(slots: Option<i32>, storage_mb: Option<i64>) -> Result<(), OutOfBounds> {
    if slots.is_some_and(|s| !(0..=MAX_SLOTS).contains(&s)) {
        return Err(OutOfBounds::Slots);
    }
    if storage_mb.is_some_and(|s| !(0..=MAX_STORAGE_MB).contains(&s)) {
        return Err(OutOfBounds::StorageMb);
    }
    Ok(())
}

/// Text a person reads (a name, an id): 1 to `max` characters, no control character, not only
/// white space.
pub fn is_printable(value: &str, max: usize) -> bool {
    !value.trim().is_empty() && value.chars().count() <= max && !value.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entitlements_are_bounded_on_both_sides() {
        assert_eq!(check_entitlements(Some(0), Some(0)), Ok(()));
        assert_eq!(
            check_entitlements(Some(MAX_SLOTS), Some(MAX_STORAGE_MB)),
            Ok(())
        );
        assert_eq!(check_entitlements(None, None), Ok(()));
        assert_eq!(check_entitlements(Some(-1), None), Err(OutOfBounds::Slots));
        assert_eq!(
            check_entitlements(Some(MAX_SLOTS + 1), None),
            Err(OutOfBounds::Slots)
        );
        assert_eq!(
            check_entitlements(None, Some(MAX_STORAGE_MB + 1)),
            Err(OutOfBounds::StorageMb)
        );
    }

    #[test]
    fn printable_text_has_something_visible_and_no_control_characters() {
        assert!(is_printable("Ada Lovelace", MAX_NAME));
        assert!(is_printable("Zoë", 3));
        for bad in ["", "   ", "a\nb", "a\u{7f}", "a\u{85}"] {
            assert!(!is_printable(bad, MAX_NAME), "{bad:?}");
        }
        assert!(!is_printable(&"x".repeat(MAX_NAME + 1), MAX_NAME));
    }
}
