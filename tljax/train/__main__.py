"""``python -m tljax.train …`` is ``python -m tljax.run …`` (the entry point lives above ``train``)."""

if __name__ == "__main__":
    from tljax.run import main

    main()
