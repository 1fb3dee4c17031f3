"""Results database: connection, embedded server, ORM schema, repository functions."""
