//! Diesel table definitions, matching `migrations/`.

diesel::table! {
    accounts (id) {
        id -> Text,
        name -> Text,
        db_tag -> Text,
        slots -> Int4,
        storage_mb -> Int8,
        db_access -> Bool,
        suspended -> Bool,
        next_db_seq -> Int4,
        created_at -> Timestamptz,
        external_id -> Nullable<Text>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Text,
        account_id -> Text,
        key_hash -> Bytea,
        enabled -> Bool,
        disabled_by_suspension -> Bool,
        created_at -> Timestamptz,
        label -> Text,
        last_used_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    platform_idempotency (token_id, key) {
        token_id -> Text,
        key -> Text,
        fingerprint -> Bytea,
        resource -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    platform_tokens (id) {
        id -> Text,
        name -> Text,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    databases (id) {
        id -> Text,
        account_id -> Text,
        name -> Text,
        engine -> Text,
        seq -> Int4,
        db_name -> Text,
        db_user -> Text,
        password_sealed -> Bytea,
        state -> Text,
        size_bytes -> Int8,
        size_refreshed_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        host -> Text,
        engine_access -> Text,
        unmeasured_passes -> Int4,
    }
}

diesel::table! {
    periodic_runs (name) {
        name -> Text,
        last_run_at -> Timestamptz,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Int8,
        at -> Timestamptz,
        actor -> Text,
        action -> Text,
        account_id -> Text,
        database_id -> Nullable<Text>,
        key_id -> Nullable<Text>,
        address -> Nullable<Text>,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    engine_hosts (name) {
        name -> Text,
        engine -> Text,
        public_host -> Text,
        public_port -> Int4,
        capacity -> Int4,
        drained -> Bool,
        updated_at -> Timestamptz,
        databases -> Int8,
    }
}

diesel::table! {
    jobs (id) {
        id -> Text,
        database_id -> Nullable<Text>,
        kind -> Text,
        state -> Text,
        password_sealed -> Nullable<Bytea>,
        attempts -> Int4,
        error_code -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    idempotency_keys (account_id, key) {
        account_id -> Text,
        key -> Text,
        fingerprint -> Bytea,
        job_id -> Text,
        created_at -> Timestamptz,
    }
}

diesel::joinable!(api_keys -> accounts (account_id));
diesel::joinable!(idempotency_keys -> jobs (job_id));
diesel::joinable!(databases -> accounts (account_id));
diesel::joinable!(databases -> engine_hosts (host));
diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    api_keys,
    audit_log,
    databases,
    engine_hosts,
    idempotency_keys,
    jobs,
    periodic_runs,
    platform_idempotency,
    platform_tokens
);
