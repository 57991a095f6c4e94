-- Run once by the MySQL image on an empty data directory: a table for the binlog
-- source and the replication rights it needs (the image creates user etl itself).
CREATE TABLE IF NOT EXISTS shop.customers (
  id BIGINT PRIMARY KEY AUTO_INCREMENT,
  name VARCHAR(64) NOT NULL,
  email VARCHAR(128)
);
GRANT REPLICATION SLAVE, REPLICATION CLIENT, RELOAD ON *.* TO 'etl'@'%';
FLUSH PRIVILEGES;
