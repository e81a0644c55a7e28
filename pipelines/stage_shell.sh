#!/bin/sh
# The shell DVC runs a stage's command with when the flow runs the stage (pipelines/runner.py points
# SHELL here; DVC calls `$SHELL -c COMMAND`). It runs the command with /bin/sh and appends its exit
# status to the file $FLANMOE_STAGE_STATUS names: DVC reports that status only in an English message.
/bin/sh "$@"
status=$?
if [ -n "${FLANMOE_STAGE_STATUS:-}" ]; then
    echo "$status" >>"$FLANMOE_STAGE_STATUS"
fi
exit "$status"
