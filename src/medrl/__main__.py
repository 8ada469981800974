from medrl.cli import main

if __name__ == "__main__":  # spawned worker processes (multiprocessing) import this module too
    main()
