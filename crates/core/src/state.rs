//! Lifecycle states of databases and jobs, as stored in metadata.

use std::str::FromStr;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(format!("unknown {} `{other}`", stringify!($name))),
                }
            }
        }
    };
}

text_enum!(
    /// Where a database is in its life. Only `Active`, `OverQuota` and `Disabled` are visible
    /// through the API (the spec's `status`); the others are internal.
    DatabaseState {
        /// Intent recorded, the create job has not finished yet.
        Creating => "creating",
        Active => "active",
        OverQuota => "over_quota",
        Disabled => "disabled",
        /// A create that failed and whose engine cleanup could not be confirmed; holds no slot
        /// and no name, and waits for an operator or the reconciler.
        Failed => "failed",
        /// An operator deletion is under way.
        Deleting => "deleting",
    }
);

impl DatabaseState {
    /// Holds one of its account's slots and its name: from the intent until it is deleted.
    /// A failed create holds neither.
    pub fn holds_slot(self) -> bool {
        !matches!(self, DatabaseState::Failed)
    }

    /// Shown to its owner through the API (has a public `status`).
    pub fn is_visible(self) -> bool {
        self.public_status().is_some()
    }

    /// Moves between `active` and `over_quota` with its account's measured total, and becomes
    /// `disabled` when the account is suspended. (A disabled database waits for unsuspension.)
    pub fn is_quota_managed(self) -> bool {
        matches!(self, DatabaseState::Active | DatabaseState::OverQuota)
    }

    /// The stored text of every state for which `pred` holds: for filters in metadata queries.
    pub fn texts(pred: fn(Self) -> bool) -> Vec<&'static str> {
        Self::ALL
            .iter()
            .copied()
            .filter(|s| pred(*s))
            .map(Self::as_str)
            .collect()
    }

    /// The spec's `status` value, or `None` when the database is not visible to its owner.
    pub fn public_status(self) -> Option<&'static str> {
        match self {
            DatabaseState::Active | DatabaseState::OverQuota | DatabaseState::Disabled => {
                Some(self.as_str())
            }
            DatabaseState::Creating | DatabaseState::Failed | DatabaseState::Deleting => None,
        }
    }
}

text_enum!(
    /// Where a job is. `Pending` jobs may still be cancelled by the gateway; once a worker has
    /// claimed one (`Running`) it is finished, never abandoned.
    JobState {
        Pending => "pending",
        Running => "running",
        Done => "done",
        Failed => "failed",
        Cancelled => "cancelled",
    }
);

text_enum!(
    /// What a job does.
    JobKind {
        Create => "create",
        Rotate => "rotate",
        /// Bring one database's engine access in line with metadata (suspension, quota).
        Access => "access",
        /// Drop a database and its user (what carries hepdb's mark), then its row: the
        /// platform's deletion.
        Delete => "delete",
    }
);

text_enum!(
    /// What a database's engine user may do. The wanted level follows from metadata; the
    /// applied one is recorded per database (`engine_access`).
    Access {
        Full => "full",
        /// Over the storage quota: read and delete, no new data.
        Restricted => "restricted",
        /// Suspended: no login at all.
        Locked => "locked",
    }
);

impl Access {
    /// The access a database should have: a suspended account locks everything; otherwise a
    /// database over quota is restricted.
    pub fn wanted(account_suspended: bool, state: DatabaseState) -> Self {
        // A database being deleted keeps no access while its deletion runs.
        if account_suspended || state == DatabaseState::Disabled || state == DatabaseState::Deleting
        {
            Access::Locked
        } else if state == DatabaseState::OverQuota {
            Access::Restricted
        } else {
            Access::Full
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_three_states_are_public() {
        let public: Vec<_> = [
            DatabaseState::Creating,
            DatabaseState::Active,
            DatabaseState::OverQuota,
            DatabaseState::Disabled,
            DatabaseState::Failed,
            DatabaseState::Deleting,
        ]
        .into_iter()
        .filter_map(DatabaseState::public_status)
        .collect();
        assert_eq!(public, ["active", "over_quota", "disabled"]);
        assert_eq!("over_quota".parse(), Ok(DatabaseState::OverQuota));
    }

    #[test]
    fn state_sets() {
        assert_eq!(
            DatabaseState::texts(DatabaseState::holds_slot),
            ["creating", "active", "over_quota", "disabled", "deleting"]
        );
        assert_eq!(
            DatabaseState::texts(DatabaseState::is_visible),
            ["active", "over_quota", "disabled"]
        );
        assert_eq!(
            DatabaseState::texts(DatabaseState::is_quota_managed),
            ["active", "over_quota"]
        );
        for s in DatabaseState::ALL {
            assert_eq!(s.as_str().parse::<DatabaseState>(), Ok(*s));
            // Everything visible holds a slot; a failed create holds nothing.
            assert!(!s.is_visible() || s.holds_slot());
        }
        assert!(!DatabaseState::Failed.holds_slot());
    }
}
