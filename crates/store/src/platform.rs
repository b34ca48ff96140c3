//! Platform tokens: the bearer tokens of the platform API, minted by `hepdb-admin
//! platform-token mint`. Stored as SHA-256 only; a token's name is the audit log's actor.

use diesel::{OptionalExtension, prelude::*};
use diesel_async::RunQueryDsl;
use hepdb_core::{
    PlatformTokenId,
    secret::{KeyHash, PlatformToken},
};

use crate::{Result, Store, schema::platform_tokens};

impl Store {
    /// Mints a token named `name`; the token is returned once and never stored.
    pub async fn mint_platform_token(
        &self,
        name: &str,
    ) -> Result<(PlatformTokenId, PlatformToken)> {
        let (id, token) = (PlatformTokenId::new(), PlatformToken::generate());
        let mut conn = self.conn().await?;
        diesel::insert_into(platform_tokens::table)
            .values((
                platform_tokens::id.eq(id.to_text()),
                platform_tokens::name.eq(name),
                platform_tokens::token_hash.eq(&token.hash().0[..]),
            ))
            .execute(&mut conn)
            .await?;
        Ok((id, token))
    }

    /// Ends a token for good. Returns whether a live token had that id.
    pub async fn revoke_platform_token(&self, id: PlatformTokenId) -> Result<bool> {
        let mut conn = self.conn().await?;
        let n = diesel::update(
            platform_tokens::table
                .find(id.to_text())
                .filter(platform_tokens::revoked_at.is_null()),
        )
        .set(platform_tokens::revoked_at.eq(diesel::dsl::now))
        .execute(&mut conn)
        .await?;
        Ok(n == 1)
    }

    /// The id and name of the live token with this hash: one indexed point select.
    #[tracing::instrument(name = "metadata.platform_token", skip_all)]
    pub async fn platform_token(&self, hash: &KeyHash) -> Result<Option<(String, String)>> {
        let mut conn = self.conn().await?;
        let found: Option<(String, String, Vec<u8>)> = platform_tokens::table
            .filter(platform_tokens::token_hash.eq(&hash.0[..]))
            .filter(platform_tokens::revoked_at.is_null())
            .select((
                platform_tokens::id,
                platform_tokens::name,
                platform_tokens::token_hash,
            ))
            .first(&mut conn)
            .await
            .optional()?;
        Ok(found.and_then(|(id, name, stored)| hash.matches(&stored).then_some((id, name))))
    }
}
