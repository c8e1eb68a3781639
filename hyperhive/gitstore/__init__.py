"""Git storage through dulwich only: the engine never shells out to `git`."""
