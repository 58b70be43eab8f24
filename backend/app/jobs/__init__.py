"""Jobs: the job model and its status rules, the manager, the event log and the executors."""
