//! Ready-to-use connection strings, one scheme per engine as the spec shows.

use crate::{Engine, naming::EngineNames, secret::Password};

/// `mysql://`, `postgresql://` or `mongodb://...?authSource=admin`. The password is
/// alphanumeric and the names are generated, so nothing needs percent-encoding.
pub fn connection_string(
    engine: Engine,
    host: &str,
    port: u16,
    names: &EngineNames,
    password: &Password,
) -> String {
    let (user, pw, db) = (names.db_user(), password.expose(), names.db_name());
    match engine {
        Engine::Mariadb => format!("mysql://{user}:{pw}@{host}:{port}/{db}"),
        Engine::Postgres => format!("postgresql://{user}:{pw}@{host}:{port}/{db}"),
        Engine::Mongo => format!("mongodb://{user}:{pw}@{host}:{port}/{db}?authSource=admin"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::DbTag;

    #[test]
    fn one_scheme_per_engine() {
        let names = EngineNames::new(&DbTag::parse("0a1b2c3d4e").unwrap(), 1);
        let pw = Password::from_trusted("Secret123".into());
        let host = "db.teamhydra.dev";
        assert_eq!(
            connection_string(Engine::Mariadb, host, 3306, &names, &pw),
            "mysql://dum_0a1b2c3d4e_1:Secret123@db.teamhydra.dev:3306/um_0a1b2c3d4e_1"
        );
        assert_eq!(
            connection_string(Engine::Postgres, host, 5432, &names, &pw),
            "postgresql://dum_0a1b2c3d4e_1:Secret123@db.teamhydra.dev:5432/um_0a1b2c3d4e_1"
        );
        assert_eq!(
            connection_string(Engine::Mongo, host, 27017, &names, &pw),
            "mongodb://dum_0a1b2c3d4e_1:Secret123@db.teamhydra.dev:27017/um_0a1b2c3d4e_1?authSource=admin"
        );
    }
}
