from keel.cli.main import main

# Guarded so that importing this module (as multiprocessing's spawn does) runs nothing.
if __name__ == "__main__":
    main()
