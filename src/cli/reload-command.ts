/** What `mount --activate` and `promote` tell the user to run so that a running `run` serves the change. */
export const RELOAD_COMMAND =
  'codi-adapter reload (or kill -HUP <run pid>; in a container: docker exec <name> codi-adapter reload)';
