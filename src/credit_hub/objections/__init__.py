"""Due process: objections and credit repairs (states, deadlines), and the maintenance job."""
