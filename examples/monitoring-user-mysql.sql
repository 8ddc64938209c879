-- The user poolwarden connects to MySQL or MariaDB as: it sees every thread and may end other
-- users' threads, and nothing else. Run once per server as an administrator, after replacing the
-- password:
--
--   mysql -u root -p < examples/monitoring-user-mysql.sql
--
-- Never give poolwarden SUPER or ALL PRIVILEGES. Grant directly, not through a role: poolwarden
-- reads SHOW GRANTS and does not follow roles.

CREATE USER 'poolwarden'@'%' IDENTIFIED BY 'change-me';

-- See every user's threads in the processlist, and InnoDB's open transactions.
GRANT PROCESS ON *.* TO 'poolwarden'@'%';

-- KILL CONNECTION on other users' threads (Enforce mode only). MariaDB 10.5.2+ calls it
-- CONNECTION ADMIN; MySQL 8 calls it CONNECTION_ADMIN: use the line for your server.
GRANT CONNECTION ADMIN ON *.* TO 'poolwarden'@'%';       -- MariaDB
-- GRANT CONNECTION_ADMIN ON *.* TO 'poolwarden'@'%';    -- MySQL 8

-- When performance_schema is on: program_name of every connection (attribution by pod name, and
-- how poolwarden recognises other poolwardens), and on MySQL the thread list without the global
-- mutex of information_schema.PROCESSLIST.
GRANT SELECT ON performance_schema.* TO 'poolwarden'@'%';
